"""A loaded ``.tflite`` file: `TFLiteModel` (``predict``; ``step`` and ``stream`` for a streaming file).

Half of the Raspberry Pi runner (`converters.runtime`, ``tflite_runner.py`` on the device,
loads files and times them; this module runs them). It imports only NumPy, so it is copied
to the device beside ``tflite_runner.py`` under the same name, ``_tflite_model.py``
(``examples/raspberry_pi/`` holds both). Its names are public from `converters.runtime`.
"""

import numpy as np

__all__ = ["TFLiteModel", "split_inputs"]

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
