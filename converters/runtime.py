"""Run a ``.tflite`` file with NumPy and one TFLite runtime: the Raspberry Pi runner.

The runner is two files that import nothing from tf-vib and need only NumPy plus one
TFLite runtime, so they are copied to a device as they are: this one (loading, timing, the
command line; ``examples/raspberry_pi/tflite_runner.py`` is this file) and
``_tflite_model.py`` (`TFLiteModel`: running a loaded file), which must sit beside it.
Runtimes, in the order tried:

1. ``ai_edge_litert`` (pip install ai-edge-litert): the maintained LiteRT runtime;
2. ``tflite_runtime`` (pip install tflite-runtime, needs numpy<2): the last release is
   2.14, still what many Raspberry Pi images carry;
3. ``tensorflow`` (``tf.lite.Interpreter``, deprecated): the full TensorFlow.

A fused TFLite LSTM keeps its state in variables between invokes, so a runner that does
not reset them feeds one sample's final state into the next: `TFLiteModel.predict` calls
``reset_all_variables()`` before every batch.

Command line (on the device)::

    python tflite_runner.py MODEL.tflite INPUTS.npz [--repeats 20] [--threads 1]

``INPUTS`` is a ``.npy`` of inputs, or a ``.npz`` with ``x`` (and optionally ``y``, class
indices). A file with several inputs takes a ``.npz`` with one array named after each
input (``TFLiteModel.input_names``: the Keras model's input names); a file with several
outputs takes labels ``y0``, ``y1``, ... It prints the runtime used, the predictions, the
accuracy when labels are given, and the median latency per sample.
"""

import argparse
import importlib
import os
import sys
import time

import numpy as np

if __package__:  # converters.runtime
    from ._tflite_model import TFLiteModel, split_inputs
else:  # tflite_runner.py on a device, or run as a script: _tflite_model.py sits beside it
    from _tflite_model import TFLiteModel, split_inputs

__all__ = [
    "RUNTIMES",
    "TFLiteModel",
    "load_interpreter",
    "measure_latency",
    "Latency",
    "available_runtimes",
    "split_inputs",
    "whole_batches",
    "main",
]

#: Runtime names, in the order `load_interpreter` tries them, and their Interpreter class.
RUNTIMES = {
    "ai_edge_litert": ("ai_edge_litert.interpreter", "Interpreter"),
    "tflite_runtime": ("tflite_runtime.interpreter", "Interpreter"),
    "tensorflow": ("tensorflow", "lite.Interpreter"),
}


def _interpreter_class(runtime):
    module, attributes = RUNTIMES[runtime]
    found = importlib.import_module(module)
    for attribute in attributes.split("."):
        found = getattr(found, attribute)
    return found


def available_runtimes():
    """The runtimes that import here, in preference order."""
    found = []
    for runtime in RUNTIMES:
        try:
            _interpreter_class(runtime)
        except Exception:  # an ImportError, or tflite_runtime 2.14 failing under NumPy 2
            continue
        found.append(runtime)
    return found


def _check_count(name, value, minimum=1):
    """``tf_vib._checks.check_int``'s check and message, here because the runner imports only NumPy."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; received {value!r}")


def load_interpreter(model, num_threads=1, runtime=None):
    """Load a ``.tflite`` file (a path or its bytes) with the first runtime that works.

    Args:
      model: a path (str or ``os.PathLike``) or the file's bytes.
      num_threads: int >= 1, default 1: the interpreter's CPU threads.
      runtime: None (default) tries `RUNTIMES` in order; a name forces that runtime.

    Returns:
      A `TFLiteModel`; its ``runtime`` attribute says which runtime loaded the file.

    Raises:
      ValueError: bad arguments, or the file cannot be read.
      RuntimeError: no runtime could load the file; the message lists each runtime's error.
    """
    _check_count("num_threads", num_threads)
    if runtime is not None and runtime not in RUNTIMES:
        raise ValueError(f"`runtime` must be None or one of {list(RUNTIMES)}; received {runtime!r}")
    if isinstance(model, (bytes, bytearray, memoryview)):
        kwargs = {"model_content": bytes(model)}
    elif isinstance(model, (str, os.PathLike)):
        if not os.path.isfile(model):
            raise ValueError(f"`model` {os.fspath(model)!r} is not a file")
        kwargs = {"model_path": os.fspath(model)}
    else:
        raise TypeError(f"`model` must be a path or the bytes of a .tflite file; received {type(model).__name__}")
    errors = []
    for name in [runtime] if runtime else list(RUNTIMES):
        try:
            interpreter_class = _interpreter_class(name)
        except Exception as error:
            errors.append(f"{name}: not usable here ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})")
            continue
        try:
            interpreter = interpreter_class(num_threads=num_threads, **kwargs)
            interpreter.allocate_tensors()
        except Exception as error:  # e.g. an op version this runtime does not know
            errors.append(f"{name}: cannot load the file ({str(error).strip().splitlines()[0]})")
            continue
        return TFLiteModel(interpreter, name)
    raise RuntimeError("no TFLite runtime could load the model:\n  " + "\n  ".join(errors))


class Latency:
    """Per-sample latency: the median over repeats of each sample, in seconds."""

    def __init__(self, per_sample):
        self.per_sample = np.asarray(per_sample, dtype=np.float64)

    @property
    def median(self):
        """The median over samples of each sample's median time (seconds)."""
        return float(np.median(self.per_sample))

    @property
    def median_us(self):
        return 1e6 * self.median

    def __repr__(self):
        return f"Latency(median={self.median_us:.1f} us over {len(self.per_sample)} samples)"


def measure_latency(model, x, *, repeats=20, warmup=3, num_threads=1, runtime=None):
    """Latency of one invoke at the file's batch size (batch 1: one sample).

    Each invoke is timed with its variable reset and input copy, as a real runner does;
    each sample is run ``repeats`` times and its median kept.

    Args:
      model: a `TFLiteModel`, a path or the bytes of a ``.tflite`` file.
      x: inputs, shape (n, ...) with the file's sample shape; the first batches are timed.
      repeats: int >= 1, invokes per batch. warmup: untimed invokes first.
      num_threads, runtime: as in `load_interpreter` (when ``model`` is not loaded yet).

    Returns:
      A `Latency`.
    """
    _check_count("repeats", repeats)
    _check_count("warmup", warmup, minimum=0)
    if not isinstance(model, TFLiteModel):
        model = load_interpreter(model, num_threads=num_threads, runtime=runtime)
    batches = whole_batches(model, x)
    for _ in range(warmup):
        model.run_batch(batches[0])
    per_sample = []
    for batch in batches:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model.run_batch(batch)
            times.append(time.perf_counter() - started)
        per_sample.append(float(np.median(times)))
    return Latency(per_sample)


def whole_batches(model, x, name=None):
    """``x`` checked against the file's inputs, cut into its batches (the rest dropped).

    Each batch is an array, or a list of arrays for a file with several inputs.
    """
    arrays, size = model.as_inputs(x), model.batch_size
    if len(arrays[0]) < size:
        raise ValueError(f"`x` holds {len(arrays[0])} samples; the{'' if name is None else f' {name!r}'} "
                         f"file's batch is {size}")
    batches = [[a[i : i + size] for a in arrays] for i in range(0, len(arrays[0]) - size + 1, size)]
    return batches if len(arrays) > 1 else [batch[0] for batch in batches]


def __getattr__(name):
    """``compare_latency`` moved to `converters.latency` (tf-vib 0.2): the old name warns until 0.3.

    Read from the loaded package (``converters`` imports it), not imported: the runner
    does not depend on the host's modules."""
    moved = sys.modules.get("converters.latency")
    if name != "compare_latency" or moved is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    warnings.warn("`converters.runtime.compare_latency` is deprecated and will be removed in tf-vib 0.3; "
                  "import it from converters", FutureWarning, stacklevel=2)
    return moved.compare_latency


def _load_inputs(path, model):
    """``(x, {output index: labels})`` from a ``.npy`` or ``.npz`` for ``model`` (see `main`)."""
    data = np.load(path)
    if isinstance(data, np.ndarray):
        return data, {}
    names = list(data.files)
    if len(model.input_names) > 1:
        missing = [name for name in model.input_names if name not in names]
        if missing:
            raise SystemExit(f"{path}: the file's inputs are {model.input_names}; the .npz needs one array "
                             f"named after each, and lacks {missing} (it has {names})")
        x = {name: data[name] for name in model.input_names}
    else:
        x = data["x"] if "x" in names else data[names[0]]
    if len(model.output_details) == 1:
        return x, ({0: data["y"]} if "y" in names else {})
    return x, {i: data[f"y{i}"] for i in range(len(model.output_details)) if f"y{i}" in names}


def _first(x, count):
    return {k: v[:count] for k, v in x.items()} if isinstance(x, dict) else x[:count]


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Run a .tflite classifier on inputs with NumPy and a TFLite runtime.",
        epilog="INPUTS for a file with one input: a .npy of inputs, or a .npz with 'x' and optional "
        "'y' (class indices or one-hot rows). For a file with several inputs: a .npz with one array "
        "named after each input (the names the runner prints, the Keras model's input names). For "
        "a file with several outputs, labels are 'y0', 'y1', ... (one per output, each optional).",
    )
    parser.add_argument("model", help="the .tflite file")
    parser.add_argument("inputs", help=".npy of inputs, or .npz (see below)")
    parser.add_argument("--repeats", type=int, default=20, help="timed invokes per sample (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    parser.add_argument("--runtime", choices=list(RUNTIMES), default=None,
                        help="force a runtime (default: the first that loads the file)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N samples")
    parser.add_argument("--show", type=int, default=10, help="predictions to print (default 10)")
    args = parser.parse_args(argv)
    model = load_interpreter(args.model, num_threads=args.threads, runtime=args.runtime)
    x, labels = _load_inputs(args.inputs, model)
    if args.limit is not None:
        x = _first(x, args.limit)
        labels = {i: y[: args.limit] for i, y in labels.items()}
    print(f"runtime: {model.runtime}  numpy {np.__version__}  python {sys.version.split()[0]}")
    shown = [f"{tuple(int(d) for d in detail['shape'])} {np.dtype(detail['dtype']).name}"
             for detail in model.input_details]
    if len(shown) == 1:
        print(f"model: {args.model}  input {shown[0]}")
    else:
        print(f"model: {args.model}  inputs "
              + ", ".join(f"{name} {text}" for name, text in zip(model.input_names, shown, strict=True)))
    outputs = model.predict(x)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    for index, output in enumerate(outputs):
        predictions = output.argmax(axis=-1)
        which = f"output {index} " if len(outputs) > 1 else ""
        shown = ", ".join(str(p) for p in predictions[: args.show].tolist())
        print(f"{which}predictions ({len(predictions)} samples): {shown}"
              f"{' ...' if len(predictions) > args.show else ''}")
        if index in labels:
            y = np.asarray(labels[index])
            y = y.argmax(axis=-1) if y.ndim == predictions.ndim + 1 else y
            print(f"{which}accuracy: {100 * float(np.mean(predictions == y)):.2f}%")
    count = max(model.batch_size, min(len(outputs[0]), 50))
    latency = measure_latency(model, _first(x, count), repeats=args.repeats)
    print(f"latency: {latency.median_us:.1f} us per invoke (batch {model.batch_size}, "
          f"{args.threads} thread(s), median over {len(latency.per_sample)} samples x {args.repeats} repeats)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
