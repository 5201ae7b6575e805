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


def _input_name(detail):
    """The name a converted file's input was given (``serving_default_NAME:0`` in the file)."""
    name = detail["name"]
    if name.startswith("serving_default_"):
        name = name[len("serving_default_"):]
    return name[:-2] if name.endswith(":0") else name


def _quantized(detail):
    """True if the tensor holds quantized values: an integer type with a nonzero scale.

    Token ids (an int32 input of an Embedding) are integers with no quantization (scale 0).
    """
    scale, _ = detail["quantization"]
    return np.issubdtype(detail["dtype"], np.integer) and scale != 0


class TFLiteModel:
    """A loaded ``.tflite`` model, run batch by batch from a zero recurrent state.

    A file may have several inputs and outputs: `predict` then takes a list (in the file's
    input order, the Keras model's) or a dict by input name (`input_names`) and returns a
    list, one array per output.

    A streaming file (one frame per invoke, the recurrent states as inputs and outputs of
    the same names, ``state_names``) runs a clip with `stream`, or frame by frame with
    `step`, starting from `zero_states`.

    Attributes:
      interpreter: the runtime's ``Interpreter``.
      runtime: which runtime loaded it (a key of `RUNTIMES`).
      batch_size: the batch dimension the file was converted with.
      input_details, output_details: the runtime's tensor details, in order.
      input_detail, output_detail: the first of each.
      input_names: the name of each input (the Keras input's name for a converted model).
      output_names: the name of each output (its signature name: ``output``, ``output_0``...).
      state_names: the inputs fed back from the outputs of the same name (empty unless the
        file is a streaming one), in file order.
    """

    def __init__(self, interpreter, runtime):
        self.interpreter = interpreter
        self.runtime = runtime
        self.input_details = interpreter.get_input_details()
        self.output_details = interpreter.get_output_details()
        if not self.input_details or not self.output_details:
            raise ValueError(f"the file has {len(self.input_details)} inputs and "
                             f"{len(self.output_details)} outputs; TFLiteModel needs at least one of each")
        self.input_detail, self.output_detail = self.input_details[0], self.output_details[0]
        self.input_names = [_input_name(d) for d in self.input_details]
        self.output_names = _output_names(interpreter, self.output_details)
        # A streaming file (converters.to_tflite(..., streaming=True)) names each state
        # output after the input it is fed back into.
        self.state_names = [name for name in self.input_names if name in self.output_names]
        self.batch_size = int(self.input_detail["shape"][0])

    @property
    def input_shapes(self):
        """The shape of one sample of each input (without the batch dimension)."""
        return [tuple(int(d) for d in detail["shape"][1:]) for detail in self.input_details]

    @property
    def input_shape(self):
        """The shape of one sample of the first input (without the batch dimension)."""
        return self.input_shapes[0]

    def quantize_input(self, batch, detail=None):
        """Inputs as the file's input tensor (default: the first) wants them.

        Quantized inputs (int8 files with ``int8_io``) are rounded with the tensor's scale
        and zero point; other inputs (float, or integer token ids) are cast to its type.
        """
        detail = self.input_detail if detail is None else detail
        dtype = detail["dtype"]
        if _quantized(detail):
            scale, zero_point = detail["quantization"]
            info = np.iinfo(dtype)
            return np.clip(np.round(batch / scale + zero_point), info.min, info.max).astype(dtype)
        return np.asarray(batch).astype(dtype, copy=False)

    def dequantize_output(self, values, detail=None):
        """An output (default: the first) as float32, dequantized when it is quantized."""
        detail = self.output_detail if detail is None else detail
        if _quantized(detail):
            scale, zero_point = detail["quantization"]
            return (values.astype(np.float32) - zero_point) * scale
        return values.astype(np.float32)

    def run_batch(self, batch):
        """One invoke on exactly ``batch_size`` samples, from a zero recurrent state.

        ``batch`` is an array, or a list of arrays (one per input) for a file with several
        inputs; the result is an array, or a list (one per output).
        """
        self.interpreter.reset_all_variables()
        arrays = batch if isinstance(batch, list) else [batch]
        for detail, array in zip(self.input_details, arrays, strict=True):
            self.interpreter.set_tensor(detail["index"], self.quantize_input(array, detail))
        self.interpreter.invoke()
        outputs = [self.dequantize_output(self.interpreter.get_tensor(d["index"]), d)
                   for d in self.output_details]
        return outputs if len(outputs) > 1 else outputs[0]

    def as_inputs(self, x, argument="x"):
        """``x`` as a list with one array of samples per input, checked against the file.

        Args:
          x: for a file with one input, an array of shape (n, ...); for several, a list or
            tuple of arrays in the file's input order, or a dict by input name.
          argument: the name used in error messages.

        Raises:
          ValueError: the number of inputs, a sample shape or the number of samples does
            not match the file; integer inputs that are not whole numbers.
        """
        arrays, labels = split_inputs(x, self.input_names, argument)
        checked = []
        for array, label, detail, shape in zip(arrays, labels, self.input_details, self.input_shapes,
                                               strict=True):
            checked.append(_checked_input(array, label, detail, shape))
        counts = {len(a) for a in checked}
        if len(counts) > 1:
            raise ValueError(f"the arrays of `{argument}` hold different numbers of samples: "
                             f"{[len(a) for a in checked]}")
        return checked

    def predict(self, x):
        """Outputs (dequantized, float32) for every sample of ``x``.

        ``x`` is split into batches of the file's batch size (the last one padded with
        zeros); the variables are reset before every batch.

        Args:
          x: see `as_inputs`: an array of shape (n, ...) for a file with one input, a list
            or a dict by input name for several.

        Returns:
          An array of shape (n, ...), or a list of them for a file with several outputs.
        """
        return self._by_batch(self.as_inputs(x), self.run_batch, len(self.output_details))

    def _by_batch(self, arrays, run, outputs):
        """``run`` on each batch of ``arrays`` (the last padded with zeros); its ``outputs``
        arrays (one, or a list) cut to the samples given and joined over batches."""
        n, size = len(arrays[0]), self.batch_size
        parts = []
        for start in range(0, n, size):
            result = run([_padded(array[start : start + size], size) for array in arrays])
            parts.append([output[: min(size, n - start)] for output in (result if isinstance(result, list) else [result])])
        merged = ([np.concatenate(column) for column in zip(*parts, strict=True)] if parts
                  else [np.zeros((0,), np.float32) for _ in range(outputs)])
        return merged if len(merged) > 1 else merged[0]

    def zero_states(self):
        """The states a streaming file starts a clip from: ``{name: zeros}`` (float32)."""
        return {name: np.zeros(self.input_details[self.input_names.index(name)]["shape"], np.float32)
                for name in self.state_names}

    def step(self, frames, states=None):
        """One invoke of a streaming file: a frame in, the outputs on the current state out.

        Args:
          frames: the batch's current frame, shape ``(batch_size, ...)``, or a list with
            one array per input that is not a state (an input without a time axis gets its
            whole value at every step).
          states: ``{name: array}`` from `zero_states` or the previous step; None: zeros.

        Returns:
          ``(outputs, states)``: the outputs (an array, or a list for several), dequantized,
          and the next states, to pass to the next step.
        """
        if not self.state_names:
            raise ValueError(f"the file has no state inputs (inputs {self.input_names}, outputs "
                             f"{self.output_names}): it is not a streaming file; use predict")
        feeds = [i for i, name in enumerate(self.input_names) if name not in self.state_names]
        arrays = frames if isinstance(frames, list) else [frames]
        if len(arrays) != len(feeds):
            raise ValueError(f"`frames` must hold {len(feeds)} arrays, one per input "
                             f"{[self.input_names[i] for i in feeds]}; received {len(arrays)}")
        states = self.zero_states() if states is None else states
        values = dict(zip((self.input_names[i] for i in feeds), arrays, strict=True))
        for name, detail in zip(self.input_names, self.input_details, strict=True):
            value = states[name] if name in self.state_names else values[name]
            self.interpreter.set_tensor(detail["index"], self.quantize_input(value, detail))
        self.interpreter.invoke()
        outputs = {name: self.dequantize_output(self.interpreter.get_tensor(d["index"]), d)
                   for name, d in zip(self.output_names, self.output_details, strict=True)}
        heads = [outputs[name] for name in self.output_names if name not in self.state_names]
        return (heads if len(heads) > 1 else heads[0]), {name: outputs[name] for name in self.state_names}

    def stream(self, x):
        """A streaming file's outputs at every step of each clip, its states fed back from zeros.

        Args:
          x: clips of shape ``(n, steps, ...)``, ``...`` being the file's frame shape, for
            one input; for several, a list (the non-state inputs in file order) or a dict by
            name, where an input without a time axis is ``(n, ...)``.

        Returns:
          The outputs at every step, shape ``(n, steps, ...)`` (the last step's is the
          whole clip's answer), or a list of them for several outputs.
        """
        names = [name for name in self.input_names if name not in self.state_names]
        arrays, labels = split_inputs(x, names, "x")
        arrays, timed = [np.asarray(a) for a in arrays], []
        for array, label, name in zip(arrays, labels, names, strict=True):
            frame = self.input_shapes[self.input_names.index(name)]
            timed.append(array.ndim == len(frame) + 2 and array.shape[2:] == frame)
            if not timed[-1] and array.shape[1:] != frame:
                raise ValueError(f"`{label}` has shape {array.shape}; the file takes frames of shape {frame}, "
                                 f"so clips of shape (n, steps, {', '.join(map(str, frame))})")
        steps = {a.shape[1] for a, t in zip(arrays, timed, strict=True) if t}
        if len(steps) != 1:
            raise ValueError(f"`x` must hold clips with one number of steps; received shapes "
                             f"{[a.shape for a in arrays]}")
        count = steps.pop()

        def clip(batch):
            states, per_step = None, []
            for t in range(count):
                outputs, states = self.step([b[:, t] if is_timed else b for b, is_timed in zip(batch, timed, strict=True)],
                                            states)
                per_step.append(outputs if isinstance(outputs, list) else [outputs])
            return [np.stack(column, axis=1) for column in zip(*per_step, strict=True)]

        return self._by_batch(arrays, clip, len(self.output_names) - len(self.state_names))


def _output_names(interpreter, details):
    """Each output's signature name (``output``, a state's name), or its tensor name without one."""
    try:
        by_name = interpreter.get_signature_runner().get_output_details()
    except Exception:  # a file without a signature
        return [d["name"] for d in details]
    names = {}
    for name, detail in by_name.items():
        names.setdefault(detail["index"], []).append(name)
    # Two outputs may be one tensor (a streaming file whose output is a state): each gets a name.
    return [names[d["index"]].pop(0) if names.get(d["index"]) else d["name"] for d in details]


def split_inputs(x, names, argument="x"):
    """``(arrays, labels)``: ``x`` as one array-like per input, and how to name each in errors.

    Args:
      x: for one input, its array; for several (``names``), a list or tuple in that order,
        or a dict by name. A one-element list holding an array is taken as that array.
      names: the inputs' names.
      argument: the argument's name in error messages (``x``, ``x[1]``, ``x['tokens']``).
    """
    if isinstance(x, dict):
        if sorted(x) != sorted(names):
            raise ValueError(f"`{argument}` must have one array per input, keys {names}; "
                             f"received keys {list(x)}")
        return [x[name] for name in names], [f"{argument}[{name!r}]" for name in names]
    many = len(names) > 1
    if many and not isinstance(x, (list, tuple)):
        raise ValueError(f"the model has {len(names)} inputs {names}: `{argument}` must be a list of "
                         f"{len(names)} arrays or a dict by input name; received one array of shape "
                         f"{np.shape(x)}")
    if many or (isinstance(x, (list, tuple)) and len(x) == 1 and isinstance(x[0], np.ndarray)):
        if len(x) != len(names):
            raise ValueError(f"`{argument}` must hold {len(names)} arrays, one per input {names}; "
                             f"received {len(x)}")
        return list(x), [f"{argument}[{i}]" for i in range(len(names))]
    return [x], [argument]


def _padded(batch, size):
    if len(batch) == size:
        return batch
    return np.concatenate([batch, np.zeros((size - len(batch),) + batch.shape[1:], batch.dtype)])


def _checked_input(array, label, detail, shape):
    """One input's samples as an array of the type to feed (float32, or integers)."""
    array = np.asarray(array)
    if array.shape[1:] != shape:
        raise ValueError(f"`{label}` has samples of shape {array.shape[1:]}, but the file takes {shape} "
                         f"(input tensor {tuple(int(d) for d in detail['shape'])})")
    if np.issubdtype(detail["dtype"], np.integer) and not _quantized(detail):
        if not np.issubdtype(array.dtype, np.integer):
            if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
                raise ValueError(f"`{label}` must hold whole numbers (the file's input is "
                                 f"{np.dtype(detail['dtype']).name}, e.g. token ids)")
        return array.astype(detail["dtype"])
    return array.astype(np.float32, copy=False)


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
