"""``quantization="auto"`` with a fallback: convert with the cost table's plan, verify, and
step back to a safer plan when the file misses its target or TFLite fails on it.

The steps, at most one conversion each (a step whose plan equals the one before is skipped):

1. ``"cost table"``: the table's plan (`converters.plan.auto_plan`);
2. ``"recurrent layers float32"``: the fused LSTMs float32, every other layer as the table says
   (the convolutions keep their int8);
3. ``"float32"``: every planned layer float32, which makes a float32 file. Float32, not
   dynamic range: ``auto``'s plan has two modes per layer (int8, float32), a plan without int8
   layers already is a plain float32 file, and dynamic range is a whole-file mode of its own
   (whose small-LSTM cost on the Pi is not in the table).

A file is kept when `converters.verify` (`verify_streaming` for a streaming file) passes on
the verification samples: ``verify_data`` (held-out, with labels: the accuracy target), else
the calibration samples (without labels: the same-class target; optimistic, since the file
was calibrated on them). The decision needs at least `FALLBACK_MIN_SAMPLES` samples: the int8
target (1 point of accuracy, or the same class on 99% of samples) allows no disagreement at
all below 100 samples, so at 64 one borderline sample would decide. With fewer samples the
first file that converts is kept, noted as not checked. A conversion error or a crash of the
converter's child process (`ConversionCrash`; the caller lives on) abandons that step too.
The file's ``tf_vib`` metadata records every step (`describe_tflite(flat).tf_vib
["quantization_fallback"]`): which plan the file has, and why each earlier one was abandoned.
"""

import json
import warnings

from converters._child import ConversionError
from converters.streaming import verify_streaming
from converters.verify import verify

__all__ = ["FALLBACK_MIN_SAMPLES", "FALLBACK_STEPS", "FallbackWarning", "split_verify_data", "verification_check",
           "convert_auto"]

#: The fewest verification samples on which a missed target makes `convert_auto` step back.
FALLBACK_MIN_SAMPLES = 200
#: ``(name, auto_plan's fallback argument)`` in the order they are tried.
FALLBACK_STEPS = (("cost table", None), ("recurrent layers float32", "recurrent"), ("float32", "float32"))


class FallbackWarning(UserWarning):
    """Every step of ``quantization="auto"``'s fallback missed its verification target."""


def split_verify_data(verify_data):
    """``(x, y)`` of ``verify_data``: a pair ``(x, y)``, or inputs alone (``y`` None)."""
    return verify_data if isinstance(verify_data, tuple) else (verify_data, None)


def verification_check(model, streaming, verify_data, representative):
    """``(check, None)``: ``check(flat)`` is the file's `Verification`; or ``(None, why not)``.

    Args:
      model: the caller's model (the reference). streaming: whether the files are streaming.
      verify_data: None, inputs ``x``, or a tuple ``(x, y)``.
      representative: the calibration samples as the file's list of inputs (or None).
    """
    def check(flat):  # the module's names, read when called (tests replace them)
        return (verify_streaming if streaming else verify)(model, flat, x, y)

    if verify_data is None:
        if streaming:
            return None, "no verify_data (a streaming file is verified over whole clips)"
        x, y = representative if len(representative) > 1 else representative[0], None
        source = "calibration samples"
    else:
        x, y = split_verify_data(verify_data)
        source = "verify_data"
    n = len(next(iter(x.values())) if isinstance(x, dict) else x[0] if isinstance(x, list) else x)
    if n < FALLBACK_MIN_SAMPLES:
        return None, (f"{n} {source}, fewer than the {FALLBACK_MIN_SAMPLES} the fallback "
                                  "decides on (below 100 the int8 target allows no disagreement)")
    return check, None


def _modes(job):
    return {p.name: p.becomes.split()[0] for p in job.quantization_plans}


def _rewrite(flat, job, record):
    from converters._worker import with_metadata
    from converters.describe import describe_tflite

    # the worker's own notes (int8_repairs) stay; the job's are those of the step that was kept
    metadata = {**(describe_tflite(flat).tf_vib or {}), **(job.metadata or {})}
    metadata["quantization_fallback"] = {**record, "min_samples": FALLBACK_MIN_SAMPLES}  # the decision rule
    return with_metadata(flat, "tf_vib", json.dumps(metadata).encode())


def convert_auto(job, convert, check, not_checked):
    """The ``auto`` file by the fallback steps: ``convert([job])`` once per step tried.

    Args:
      job: the planned ``auto`` job (`converters.tflite._Job`); it is re-planned per step.
      convert: ``jobs -> {name: bytes}`` (raises `ConversionError` / `ConversionCrash`).
      check: ``bytes -> Verification``, or None (then ``not_checked`` says why).
    """
    attempts, seen, kept, error = [], [], None, None
    for name, fallback in FALLBACK_STEPS:
        if fallback is not None:
            job.plan_quantization(job.cost_table, fallback)
        modes = _modes(job)
        attempt = {"plan": name, "int8": sorted(k for k, m in modes.items() if m == "int8"),
                   "float32": sorted(k for k, m in modes.items() if m == "float32"), "file": job.convert_as}
        attempts.append(attempt)
        if (job.convert_as, modes) in seen:
            attempt["outcome"] = "skipped: the same plan as an earlier step"
            continue
        seen.append((job.convert_as, modes))
        job.refresh_metadata()
        try:
            flat = convert([job])[job.name]
        except ConversionError as failure:  # ConversionCrash too: the child died, not this process
            error = failure
            attempt["outcome"] = f"abandoned: {type(failure).__name__}: {str(failure).splitlines()[0][:300]}"
            continue
        if check is None:
            attempt["outcome"] = f"used, not verified: {not_checked}"
            return _rewrite(flat, job, {"used": name, "attempts": attempts})
        try:
            result = check(flat)
        except Exception as failure:  # noqa: BLE001 - e.g. a runtime that cannot load the file: step back
            error = ConversionError(f"the {name!r} file could not be verified: {type(failure).__name__}: {failure}")
            attempt["outcome"] = f"abandoned: its verification failed: {type(failure).__name__}: {str(failure)[:300]}"
            continue
        attempt["verification"] = str(result)
        kept = (flat, job.metadata, name)
        if result.passed:
            attempt["outcome"] = "used: verified"
            return _rewrite(flat, job, {"used": name, "attempts": attempts})
        attempt["outcome"] = "abandoned: missed its verification target"
    if kept is None:
        raise error
    flat, job.metadata, name = kept
    attempt = next(a for a in attempts if a["plan"] == name)
    attempt["outcome"] = "used although it missed its verification target: no safer plan is left"
    warnings.warn(f"quantization='auto': every plan missed its verification target; the file has the "
                  f"{name!r} plan ({attempt['verification']})", FallbackWarning, stacklevel=4)
    return _rewrite(flat, job, {"used": name, "attempts": attempts})
