"""Run a ``.tflite`` file with NumPy and one TFLite runtime: the Raspberry Pi runner.

This module is a single file on purpose: it imports nothing from tf-vib and needs only
NumPy plus one TFLite runtime, so it can be copied to a device as it is
(``examples/raspberry_pi/tflite_runner.py`` is this file). Runtimes, in the order tried:

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
indices). It prints the runtime used, the predictions, the accuracy when labels are
given, and the median latency per sample.
"""

import argparse
import importlib
import os
import sys
import time

import numpy as np

__all__ = [
    "RUNTIMES",
    "TFLiteModel",
    "load_interpreter",
    "measure_latency",
    "compare_latency",
    "Latency",
    "available_runtimes",
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


class TFLiteModel:
    """A loaded ``.tflite`` model with one input and one output, run sample by sample.

    Attributes:
      interpreter: the runtime's ``Interpreter``.
      runtime: which runtime loaded it (a key of `RUNTIMES`).
      batch_size: the batch dimension the file was converted with.
      input_detail, output_detail: the runtime's tensor details.
    """

    def __init__(self, interpreter, runtime):
        self.interpreter = interpreter
        self.runtime = runtime
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"TFLiteModel runs files with one input and one output; this file has "
                f"{len(inputs)} inputs and {len(outputs)} outputs"
            )
        self.input_detail, self.output_detail = inputs[0], outputs[0]
        self.batch_size = int(self.input_detail["shape"][0])

    @property
    def input_shape(self):
        """The shape of one sample (without the batch dimension)."""
        return tuple(int(d) for d in self.input_detail["shape"][1:])

    def quantize_input(self, batch):
        """Float inputs as the file's input tensor wants them (int8 files take int8)."""
        dtype = self.input_detail["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero_point = self.input_detail["quantization"]
            info = np.iinfo(dtype)
            return np.clip(np.round(batch / scale + zero_point), info.min, info.max).astype(dtype)
        return np.asarray(batch, dtype=dtype)

    def dequantize_output(self, values):
        dtype = self.output_detail["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero_point = self.output_detail["quantization"]
            return (values.astype(np.float32) - zero_point) * scale
        return values.astype(np.float32)

    def run_batch(self, batch):
        """One invoke on exactly ``batch_size`` samples, from a zero recurrent state."""
        self.interpreter.reset_all_variables()
        self.interpreter.set_tensor(self.input_detail["index"], self.quantize_input(batch))
        self.interpreter.invoke()
        return self.dequantize_output(self.interpreter.get_tensor(self.output_detail["index"]))

    def _check(self, x):
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape:
            raise ValueError(
                f"`x` has samples of shape {x.shape[1:]}, but the file takes {self.input_shape} "
                f"(input tensor {tuple(int(d) for d in self.input_detail['shape'])})"
            )
        return x

    def predict(self, x):
        """Outputs (dequantized, float32) for every sample of ``x``, shape (n, ...).

        ``x`` is split into batches of the file's batch size (the last one padded with
        zeros); the variables are reset before every batch.
        """
        x = self._check(x)
        n, size = len(x), self.batch_size
        outputs = []
        for start in range(0, n, size):
            batch = x[start : start + size]
            if len(batch) < size:
                batch = np.concatenate([batch, np.zeros((size - len(batch),) + batch.shape[1:], batch.dtype)])
            outputs.append(self.run_batch(batch)[: min(size, n - start)])
        return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)


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
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"`num_threads` must be an integer >= 1; received {num_threads!r}")
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
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"`repeats` must be an integer >= 1; received {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"`warmup` must be an integer >= 0; received {warmup!r}")
    if not isinstance(model, TFLiteModel):
        model = load_interpreter(model, num_threads=num_threads, runtime=runtime)
    batches = _whole_batches(model, x)
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


def _whole_batches(model, x, name=None):
    """``x`` checked against the file's sample shape, cut into its batches (the rest dropped)."""
    x, size = model._check(x), model.batch_size
    if len(x) < size:
        raise ValueError(f"`x` holds {len(x)} samples; the{'' if name is None else f' {name!r}'} file's "
                         f"batch is {size}")
    return [x[i : i + size] for i in range(0, len(x) - size + 1, size)]


def compare_latency(models, x, *, repeats=20, rounds=5, num_threads=1, runtime=None, seed=0):
    """Latency of several files measured side by side, interleaved, on the same samples.

    The files take turns at the finest grain that still times whole invokes: for each
    round and each sample, every file (in a shuffled order) runs one untimed invoke and
    then ``repeats`` timed ones on that sample. A machine whose speed drifts (a shared or
    throttled CPU: on a 2-core VM the same file measured 17 us and 30 us a second apart)
    then slows all files alike, so the ratios between them are what to read.

    Args:
      models: ``{name: TFLiteModel, path or bytes}``; every file must take ``x``'s samples.
      x: inputs, shape (n, ...).
      repeats: invokes per sample per round; rounds: turns.
      seed: the order of the files in each turn is shuffled with this seed.

    Returns:
      ``{name: Latency}``, each sample's time being its median over all its invokes.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"`rounds` must be an integer >= 1; received {rounds!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"`repeats` must be an integer >= 1; received {repeats!r}")
    if not models:
        return {}
    loaded = {name: model if isinstance(model, TFLiteModel)
              else load_interpreter(model, num_threads=num_threads, runtime=runtime)
              for name, model in models.items()}
    sizes = {name: model.batch_size for name, model in loaded.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"compare_latency times files of one batch size on the same samples; "
                         f"received batch sizes {sizes}")
    names = list(loaded)
    checked = [_whole_batches(model, x, name) for name, model in loaded.items()]  # each file's shape
    batches = checked[0]  # one batch size, so the same batches for every file
    times = {name: np.empty((len(batches), rounds * repeats)) for name in names}
    order = np.random.default_rng(seed)
    for turn in range(rounds):
        for sample, batch in enumerate(batches):
            for index in order.permutation(len(names)):
                name = names[index]
                model = loaded[name]
                model.run_batch(batch)  # untimed: the file's weights back into the cache
                for repeat in range(repeats):
                    started = time.perf_counter()
                    model.run_batch(batch)
                    times[name][sample, turn * repeats + repeat] = time.perf_counter() - started
    return {name: Latency(np.median(t, axis=1)) for name, t in times.items()}


def _load_inputs(path):
    data = np.load(path)
    if isinstance(data, np.ndarray):
        return data, None
    names = list(data.files)
    x = data["x"] if "x" in names else data[names[0]]
    return x, (data["y"] if "y" in names else None)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Run a .tflite classifier on inputs with NumPy and a TFLite runtime."
    )
    parser.add_argument("model", help="the .tflite file")
    parser.add_argument("inputs", help=".npy of inputs, or .npz with 'x' (and 'y' labels)")
    parser.add_argument("--repeats", type=int, default=20, help="timed invokes per sample (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    parser.add_argument("--runtime", choices=list(RUNTIMES), default=None,
                        help="force a runtime (default: the first that loads the file)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N samples")
    parser.add_argument("--show", type=int, default=10, help="predictions to print (default 10)")
    args = parser.parse_args(argv)
    x, y = _load_inputs(args.inputs)
    if args.limit is not None:
        x = x[: args.limit]
        y = None if y is None else y[: args.limit]
    model = load_interpreter(args.model, num_threads=args.threads, runtime=args.runtime)
    print(f"runtime: {model.runtime}  numpy {np.__version__}  python {sys.version.split()[0]}")
    print(f"model: {args.model}  input {tuple(int(d) for d in model.input_detail['shape'])} "
          f"{np.dtype(model.input_detail['dtype']).name}")
    outputs = model.predict(x)
    predictions = outputs.argmax(axis=-1)
    shown = ", ".join(str(int(p)) for p in predictions[: args.show])
    print(f"predictions ({len(predictions)} samples): {shown}{' ...' if len(predictions) > args.show else ''}")
    if y is not None:
        labels = np.asarray(y)
        labels = labels.argmax(axis=-1) if labels.ndim > 1 else labels
        print(f"accuracy: {100 * float(np.mean(predictions == labels)):.2f}%")
    latency = measure_latency(model, x[: max(model.batch_size, min(len(x), 50))], repeats=args.repeats)
    print(f"latency: {latency.median_us:.1f} us per invoke (batch {model.batch_size}, "
          f"{args.threads} thread(s), median over {len(latency.per_sample)} samples x {args.repeats} repeats)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
