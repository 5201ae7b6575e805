"""Convert Keras models to TFLite and measure the files side by side: size, accuracy, speed.

Shared by ``tf-vib demo`` and ``tf-vib bench``. Latency is measured for every file in
the same process, interleaved (`converters.compare_latency`), at batch 1 on one thread:
ratios between files are the figures to read, not absolute microseconds.
"""

import dataclasses

import numpy as np

__all__ = ["FileFigures", "convert_and_measure", "ratio_rows", "files_table"]


@dataclasses.dataclass
class FileFigures:
    model: str
    mode: str
    params: int
    recurrent_params: int
    file_bytes: int
    gzip_bytes: int
    keras_accuracy: float | None
    tflite_accuracy: float | None
    latency_us: float
    verification: str
    verified: bool
    ops: str


def convert_and_measure(models, modes, calibration, x_test, y_test, *, repeats=10, rounds=3,
                        latency_samples=50, log=None):
    """``([FileFigures], {(model name, mode): bytes})`` for every model and mode.

    Args:
      models: ``{name: tf_keras model}``.
      modes: quantization modes (see ``converters.QUANTIZATIONS``).
      calibration: representative inputs for int8.
      x_test, y_test: test data: accuracy of each model and file (None without class
        labels: ``y_test`` None, or a model that is not a classifier), and the latency
        samples. ``x_test`` is an array, or several inputs as `converters.verify` takes them.
    """
    import converters
    from tf_vib.compress._data import take
    from tf_vib.compress._report import recurrent_params
    from tf_vib.sizes import gzip_size

    files, figures = {}, []
    for name, model in models.items():
        if log:
            log(f"converting {name} ({model.count_params():,} parameters) to {', '.join(modes)}")
        converted = converters.to_tflite_many(model, modes, representative_data=calibration)
        files.update({(name, mode): flat for mode, flat in converted.items()})
    if log:
        log(f"timing {len(files)} files side by side on {min(latency_samples, len(x_test))} samples")
    latency = converters.compare_latency(
        {key: flat for key, flat in files.items()}, take(x_test, slice(0, latency_samples)), repeats=repeats, rounds=rounds,
    )
    for (name, mode), flat in files.items():
        model = models[name]
        result = converters.verify(model, flat, x_test, y_test)
        info = converters.describe_tflite(flat)
        figures.append(FileFigures(
            model=name, mode=mode, params=int(model.count_params()),
            recurrent_params=int(recurrent_params(model)), file_bytes=len(flat),
            gzip_bytes=int(gzip_size(flat)), keras_accuracy=_number(result.keras_accuracy),
            tflite_accuracy=_number(result.tflite_accuracy), latency_us=latency[(name, mode)].median_us,
            verification=str(result), verified=result.passed,
            ops=", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(info.op_counts.items())),
        ))
    return figures, files


def _number(accuracy):
    return None if accuracy is None else float(np.mean(accuracy))


def ratio_rows(figures, baseline, other):
    """``{mode: (params, recurrent params, bytes, latency) ratios of baseline over other}``."""
    by = {(f.model, f.mode): f for f in figures}
    rows = {}
    for (name, mode), base in by.items():
        if name != baseline or (other, mode) not in by:
            continue
        small = by[(other, mode)]
        rows[mode] = (base.params / small.params, base.recurrent_params / max(small.recurrent_params, 1),
                      base.file_bytes / small.file_bytes, base.latency_us / small.latency_us,
                      small.tflite_accuracy - base.tflite_accuracy)
    return rows


def files_table(figures, ratios=None):
    """The files side by side (`FileFigures`), then the ``ratios`` rows (`ratio_rows`) and,
    with a baseline float32 and a compressed int8 file, the one comparing those two."""
    from tf_vib.compress._summary import format_table

    def percent(value):
        return "-" if value is None else f"{100 * value:.2f}"

    rows = [(f.model, f.mode, f"{f.params:,}", f"{f.recurrent_params:,}", f"{f.file_bytes:,}",
             percent(f.keras_accuracy), percent(f.tflite_accuracy), f"{f.latency_us:.1f}",
             "yes" if f.verified else "NO") for f in figures]
    for mode, (params, recurrent, size, speed, delta) in (ratios or {}).items():
        rows.append(("ratio", mode, f"{params:.1f}x", f"{recurrent:.1f}x", f"{size:.1f}x", "",
                     f"{100 * delta:+.2f}", f"{speed:.1f}x", ""))
    by = {(f.model, f.mode): f for f in figures}
    if ("baseline", "float32") in by and ("compressed", "int8") in by:
        base, small = by[("baseline", "float32")], by[("compressed", "int8")]
        rows.append(("int8 vs float32", "", "", "", f"{base.file_bytes / small.file_bytes:.1f}x", "",
                     f"{100 * (small.tflite_accuracy - base.tflite_accuracy):+.2f}",
                     f"{base.latency_us / small.latency_us:.1f}x", ""))
    return format_table(("model", "TFLite", "params", "recurrent params", "file bytes", "Keras acc %",
                         "TFLite acc %", "latency us", "verified"), rows)


def accuracy(model, x, y):
    return float(np.mean(model.predict(x, batch_size=256, verbose=0).argmax(-1) == y))
