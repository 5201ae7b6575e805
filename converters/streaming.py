"""Streaming export: a recurrent model rewritten to take one frame per invoke, its states explicit.

``to_tflite(model, streaming=True)`` converts `step_model(model)` instead of ``model``: the
same layers and weights, with each ``LSTM``, ``GRU`` or ``SimpleRNN`` replaced by one step of
its cell (the same kernels), so a device runs the file once per frame in a camera-style loop
and carries the states itself. The file's signature, in order (`StreamingSignature`):

- inputs: the model's inputs (``input`` for a model with one input, else the model's input
  names), those with a time axis as one frame (or one frame's features, or one token id);
  then the states in: ``<layer>_h`` (and ``<layer>_c`` after it for an LSTM), for each
  recurrent layer in the order the model runs them;
- outputs: the model's outputs (``output`` or ``output_0``, ...) computed on the current
  state, then the states out, with the same names and order as the states in.

Fed its own states back from zeros, the file's output at the last frame of a clip is the
whole-clip model's output (each frame's, for a per-step head). `TFLiteModel.stream` (NumPy
only) runs a file over clips; `verify_streaming` checks one against the Keras model.
"""

import dataclasses

import numpy as np

from converters import verify as verifying
from converters._outputs import per_output_labels, tasks_and_shapes
from converters.describe import describe_tflite
from converters.inputs import input_names, output_names
from converters.plan import UnrolledGRU, UnrolledSimpleRNN, without_masks
from converters.plan.recurrent import _Unrolled, recurrent_label
from converters.runtime import split_inputs
from tf_vib import bridge
from tf_vib._graph import copy_layer, graph_nodes, node_outputs
from tf_vib._keras import keras, tf
from tf_vib.layers.select_features import SelectFeatures

__all__ = ["StreamingSignature", "step_model", "keras_steps", "step_samples", "verify_streaming", "SUPPORTED"]

L = keras.layers

#: What `step_model` takes, for its error messages.
SUPPORTED = ("Input((T, F)), Input((T, H, W, C)) or token ids Input((T,)) -> per-step layers "
             "(TimeDistributed(...), Dense, Embedding, Dropout, activations, BatchNormalization, "
             "LayerNormalization, merges) -> LSTM, GRU or SimpleRNN (stacked with return_sequences) "
             "-> a per-step head, or any head after return_sequences=False")

#: Inference identities: they pass a frame through unchanged.
_IDENTITIES = (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise,
               L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization)
#: Layers that act on each step alone, along the last axis.
_PER_STEP = (L.Dense, L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.ThresholdedReLU, L.Rescaling, L.Add,
             L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum, SelectFeatures)
#: ... and those that do when their axis is the last one (it is -1 in the step model).
_LAST_AXIS = (L.BatchNormalization, L.LayerNormalization, L.Softmax, L.Concatenate)
_WHOLE_SEQUENCE = {
    L.Flatten: "flattens the time axis", L.GlobalAveragePooling1D: "pools over time",
    L.GlobalMaxPooling1D: "pools over time", L.AveragePooling1D: "pools over time",
    L.MaxPooling1D: "pools over time", L.Attention: "attends over the steps",
    L.AdditiveAttention: "attends over the steps", L.MultiHeadAttention: "attends over the steps",
    L.Conv1D: "convolves over time", L.Reshape: "reshapes the time axis", L.Permute: "moves the time axis",
    L.Bidirectional: "reads the clip backwards from its last frame too",
}


@dataclasses.dataclass(frozen=True)
class StreamingSignature:
    """A streaming file's inputs and outputs, in file order (see the module's docstring).

    Attributes:
      inputs: the names of the model's inputs, fed at every invoke.
      timed: for each input, whether it has a time axis (fed one frame per invoke) or not
        (fed as it is, at every invoke).
      states: ``((name, size), ...)``: the state tensors, inputs after `inputs` and outputs
        after `outputs`, of shape ``(batch, size)``.
      outputs: the names of the model's outputs.
      per_step: for each output, whether the whole-clip model gives it at every step (a
        per-step head) or once (the last step's).
    """

    inputs: tuple
    timed: tuple
    states: tuple
    outputs: tuple
    per_step: tuple

    @property
    def input_names(self):
        return [*self.inputs, *(name for name, _ in self.states)]

    @property
    def output_names(self):
        return [*self.outputs, *(name for name, _ in self.states)]


class _StepMixin:
    """One step of a recurrent layer: ``[x, *states] -> [*new states]`` (the first is its output)."""

    def build(self, input_shape):
        self._add_source_weights()
        keras.layers.Layer.build(self, input_shape)

    def projected(self, x):
        bias = self.input_bias()
        z = tf.matmul(x, self.kernel)
        return z if bias is None else z + bias


class StepLSTM(_StepMixin, _Unrolled):
    """One LSTM step. Its gates are stored in the order i, f, o, c (Keras': i, f, c, o), so
    one activation covers the three sigmoid gates. With ``one_product``, ``[x, h]`` meets the
    stacked kernels in one matrix product (one op fewer, a little faster on the Pi:
    docs/deployment.md, "Streaming"); int8 keeps two products, as a concatenation would
    give ``h`` the wider scale of ``x``."""

    one_product = False

    def __init__(self, source_config, weights, **kwargs):
        order = lambda w: np.concatenate([w[..., k * (w.shape[-1] // 4):(k + 1) * (w.shape[-1] // 4)]  # noqa: E731
                                          for k in (0, 1, 3, 2)], axis=-1)
        super().__init__(source_config, [order(np.asarray(w)) for w in weights], **kwargs)

    def input_bias(self):
        return self.bias

    def call(self, inputs):
        x, h, c = inputs
        units = self.units
        recurrent_activation = keras.activations.get(self.source_config["recurrent_activation"])
        if self.one_product:
            z = tf.matmul(tf.concat([x, h], axis=-1), tf.concat([self.kernel, self.recurrent_kernel], axis=0))
            z = z if self.bias is None else z + self.bias
        else:
            z = self.projected(x) + tf.matmul(h, self.recurrent_kernel)
        ifo, g = tf.split(z, [3 * units, units], axis=-1)
        i, f, o = tf.split(recurrent_activation(ifo), 3, axis=-1)
        c = f * c + i * self.activation(g)
        return [o * self.activation(c), c]


class StepGRU(_StepMixin, UnrolledGRU):
    """One GRU step (either ``reset_after``): `UnrolledGRU.step`."""

    def call(self, inputs):
        x, h = inputs
        x_zr, x_h = tf.split(self.projected(x), [2 * self.units, self.units], axis=-1)
        return [self.step(x_zr, x_h, h)]


class StepSimpleRNN(_StepMixin, UnrolledSimpleRNN):
    """One SimpleRNN step: `UnrolledSimpleRNN.step`."""

    def call(self, inputs):
        x, h = inputs
        return [self.step(self.projected(x), h)]


_STEPS = {"LSTM": (StepLSTM, "hc"), "RNN(LSTMCell)": (StepLSTM, "hc"), "GRU": (StepGRU, "h"),
          "RNN(GRUCell)": (StepGRU, "h"), "SimpleRNN": (StepSimpleRNN, "h"),
          "RNN(SimpleRNNCell)": (StepSimpleRNN, "h")}


def _refuse(layer, what):
    return ValueError(f"streaming=True cannot export layer {layer.name!r} ({type(layer).__name__}): {what}. "
                      f"Supported: {SUPPORTED}")


def _masked(node):
    return node.call_kwargs.get("mask") is not None or any(
        getattr(t, "_keras_mask", None) is not None for t in node.keras_inputs)


def _check_recurrent(layer, node, kind):
    if kind not in _STEPS:
        raise _refuse(layer, f"it is a {kind}, which has no streaming step (LSTM, GRU and SimpleRNN do)")
    why = ("it is stateful (the streaming file takes its states as inputs instead)" if layer.stateful
           else "go_backwards=True reads the clip from its last frame" if layer.go_backwards
           else "return_state=True (its states are the file's outputs already)" if layer.return_state
           else "time_major=True" if layer.time_major
           else "it is called with an initial_state" if len(node.keras_inputs) > 1 or "initial_state" in node.call_kwargs
           else "its input carries a Keras mask (Masking or mask_zero): remove it, a streaming file "
                "has no masked steps" if _masked(node) else None)
    if why:
        raise _refuse(layer, why)


def _timed_inputs(model, nodes):
    """The ids of the model inputs a recurrent layer reads (through any layers)."""
    origins = {id(t): {id(t)} for t in model.inputs}
    timed = set()
    for node in nodes:
        found = set().union(*(origins.get(id(t), set()) for t in node.keras_inputs))
        if recurrent_label(node.layer) is not None:
            timed |= found
        for tensor in node_outputs(node):
            origins[id(tensor)] = found
    return timed


def _per_step_layer(layer, node):
    """A copy of ``layer`` for one step of its time-axis input, or None for an identity; raises
    for a layer that needs more than the current step."""
    if isinstance(layer, L.Masking) or (isinstance(layer, L.Embedding) and layer.mask_zero):
        raise _refuse(layer, "it masks steps (Masking or mask_zero): a streaming file has no masked steps; "
                             "remove the mask")
    if isinstance(layer, _IDENTITIES):
        return None
    if type(layer) is L.TimeDistributed:
        return copy_layer(layer.layer), layer.layer
    if isinstance(layer, (*_PER_STEP, L.Embedding)):
        return copy_layer(layer), layer
    if isinstance(layer, _LAST_AXIS):
        rank = len(node.keras_inputs[0].shape)
        axes = np.atleast_1d(layer.axis)
        if not np.all((axes % rank) == rank - 1):
            raise _refuse(layer, f"its axis {layer.axis} is not the last one, so it mixes steps")
        return type(layer).from_config({**layer.get_config(), "axis": -1}), layer
    for kind, what in _WHOLE_SEQUENCE.items():
        if isinstance(layer, kind):
            raise _refuse(layer, f"it {what}: it needs the whole sequence, and a streaming file sees one "
                                 "step per invoke")
    raise _refuse(layer, "it reads a time axis and is not known to act on each step alone")


def _called(new_layer, source, args, kwargs):
    outputs = new_layer(*args, **kwargs)
    new_layer.set_weights(source.get_weights())
    return outputs


def step_model(model, *, one_product=False):
    """The one-step model a streaming file is converted from, and its signature.

    Args:
      model: a tf_keras model (plain, or with VIB layers: they are stripped first), shaped as
        `SUPPORTED` says. It is not modified.
      one_product: bool, default False: each LSTM step multiplies ``[x, h]`` by its stacked
        kernels in one product (the converter's choice in the float modes, see `StepLSTM`).

    Returns:
      ``(step, StreamingSignature)``: a Keras model with the signature's inputs and outputs.

    Raises:
      ValueError: before anything is built, naming the layer, for a model without a
        recurrent layer over a time axis, a layer that needs the whole sequence (pooling
        or Flatten over time, attention, Conv1D, Bidirectional), go_backwards, stateful,
        return_state or initial_state recurrent layers, and masks.
    """
    model = without_masks(model)
    nodes = list(graph_nodes(model))
    recurrent = [n for n in nodes if recurrent_label(n.layer) is not None]
    if not recurrent:
        raise ValueError(f"streaming=True needs a recurrent layer over a time axis; `model` {model.name!r} "
                         f"has none (its input shapes: {[tuple(t.shape) for t in model.inputs]}). "
                         f"Supported: {SUPPORTED}")
    timed_ids = _timed_inputs(model, nodes)
    names = input_names(model) if len(model.inputs) > 1 else ["input"]
    tensors, timed, inputs = {}, {}, []
    for tensor, name in zip(model.inputs, names, strict=True):
        shape = tensor.shape[2:] if id(tensor) in timed_ids else tensor.shape[1:]
        tensors[id(tensor)] = keras.Input(batch_size=tensor.shape[0], shape=tuple(shape), dtype=tensor.dtype,
                                          name=name)
        timed[id(tensor)] = id(tensor) in timed_ids
        inputs.append(tensors[id(tensor)])
    state_inputs, state_outputs, states = [], [], []
    mapped = lambda value: tensors.get(id(value), value)  # noqa: E731
    for node in nodes:
        layer = node.layer
        args = tf.nest.map_structure(mapped, tuple(node.call_args))
        kwargs = {k: tf.nest.map_structure(mapped, v) for k, v in node.call_kwargs.items() if k != "mask"}
        flags = [timed[id(t)] for t in node.keras_inputs]
        kind = recurrent_label(layer)
        if type(layer) is L.Bidirectional:
            raise _refuse(layer, f"it {_WHOLE_SEQUENCE[L.Bidirectional]}")
        if kind is not None:
            _check_recurrent(layer, node, kind)
            step_type, letters = _STEPS[kind]
            step = step_type.from_layer(layer)
            step.one_product = one_product
            ins = [keras.Input(batch_size=node.keras_inputs[0].shape[0], shape=(step.units,),
                               name=f"{layer.name}_{letter}") for letter in letters]
            outs = step([args[0], *ins])
            state_inputs += ins
            state_outputs += outs
            states += [(f"{layer.name}_{letter}", step.units) for letter in letters]
            outputs, is_timed = outs[0], layer.return_sequences
        elif any(flags):
            if not all(flags):
                raise _refuse(layer, "it joins a tensor with a time axis and one without")
            made = _per_step_layer(layer, node)
            outputs = args[0] if made is None else _called(*made, args, kwargs)
            is_timed = True
        else:
            outputs, is_timed = _called(copy_layer(layer), layer, args, kwargs), False
        for original, new in zip(node_outputs(node), tf.nest.flatten(outputs), strict=True):
            tensors[id(original)], timed[id(original)] = new, is_timed
    clash = sorted({name for name, _ in states} & set(names))
    if clash:
        raise ValueError(f"`model`'s input names {clash} are the names of its streaming states; rename "
                         "those inputs")
    heads = [tensors[id(t)] for t in model.outputs]
    signature = StreamingSignature(tuple(names), tuple(timed[id(t)] for t in model.inputs), tuple(states),
                                   tuple(output_names(model)), tuple(timed[id(t)] for t in model.outputs))
    step = keras.Model(inputs + state_inputs, heads + state_outputs, name=f"{model.name}_step")
    return step, signature


def _clip_arrays(signature, data, argument):
    if isinstance(data, tf.data.Dataset):
        raise TypeError(f"with streaming=True, `{argument}` must be clips as arrays (a list or dict for "
                        "several inputs), not a tf.data.Dataset")
    arrays = [np.asarray(a) for a in split_inputs(data, list(signature.inputs), argument)[0]]
    steps = {a.shape[1] for a, t in zip(arrays, signature.timed, strict=True) if t and a.ndim > 1}
    if len(steps) != 1:
        raise ValueError(f"`{argument}` must hold clips (n, steps, ...) with one number of steps for every "
                         f"input with a time axis; received shapes {[a.shape for a in arrays]}")
    return arrays, steps.pop()


def keras_steps(step, signature, data, *, argument="x"):
    """Run the Keras step model over clips from zero states, feeding its states back.

    Args:
      step, signature: from `step_model`.
      data: clips, shape (n, steps, ...) (a list or dict for several inputs; an input
        without a time axis is (n, ...)).

    Returns:
      One ``(inputs, outputs)`` per step: the step model's inputs (frames and the states
      before them) and its head outputs, as lists of arrays.
    """
    arrays, steps = _clip_arrays(signature, data, argument)
    for array, tensor, is_timed in zip(arrays, step.inputs[: len(arrays)], signature.timed, strict=True):
        if array.shape[1 + is_timed:] != tuple(tensor.shape[1:]):
            raise ValueError(f"`{argument}` has samples of shape {array.shape[1:]}; the model takes "
                             f"{('(steps, ' if is_timed else '(') + ', '.join(map(str, tensor.shape[1:]))})")
    states = [np.zeros((len(arrays[0]), size), np.float32) for _, size in signature.states]
    heads = len(signature.outputs)
    for t in range(steps):
        feed = [a[:, t] if is_timed else a for a, is_timed in zip(arrays, signature.timed, strict=True)] + states
        result = [np.asarray(r) for r in step(feed, training=False)]
        states = result[heads:]
        yield feed, result[:heads]


def step_samples(step, signature, data, count, *, argument="representative_data", seed=0):
    """Inputs of the step model (frames and the states before them) gathered from whole clips.

    The Keras step model is run over each clip from zero states (`keras_steps`); at most
    ``count`` of the (clip, step) pairs are kept, chosen at random with ``seed``. These
    calibrate an int8 file: its states' ranges come from the states a real clip reaches.

    Returns:
      One array per step-model input, in its order.
    """
    feeds = [feed for feed, _ in keras_steps(step, signature, data, argument=argument)]
    columns = [np.concatenate(column) for column in zip(*feeds, strict=True)]
    keep = np.random.default_rng(seed).permutation(len(columns[0]))[:count]
    return [column[np.sort(keep)] for column in columns]


def verify_streaming(model, tflite, x, y=None, *, quantization=None, num_threads=1, runtime=None):
    """Run a streaming file over clips and compare it with the whole-clip Keras model.

    The file is run with `TFLiteModel.stream` (states from zeros, fed back at every step).
    Its last step is compared with the model's output, and every step for a per-step head;
    the targets are `converters.verify`'s for the mode.

    Args:
      model: the Keras model the file was converted from (with ``streaming=True``).
      tflite: the file's bytes, its path, or a `TFLiteModel` (then pass ``quantization``).
      x: clips, shape (n, steps, ...) (a list or dict for several inputs).
      y: optional labels, as in `converters.verify` (per step, shape (n, steps), for a
        per-step head).

    Returns:
      A `converters.Verification`.
    """
    _, signature = step_model(model)
    loaded, flat = verifying._loaded(tflite, num_threads, runtime)
    if quantization is None:
        if flat is None:
            raise ValueError("pass `quantization=` when `tflite` is an already loaded TFLiteModel")
        quantization = describe_tflite(flat).quantization
    if loaded.input_names != signature.input_names:
        raise ValueError(f"the file's inputs {loaded.input_names} are not the streaming inputs "
                         f"{signature.input_names} of `model`: is it the model's streaming file?")
    arrays, _ = _clip_arrays(signature, x, "x")
    expected = verifying._as_list(model.predict(verifying._keras_inputs(model, arrays), verbose=0))
    got = verifying._as_list(loaded.stream(arrays))
    # verify's own label checks, by each output's rank in the whole-clip model (3: one label
    # per step); per-step labels are then flattened like the outputs they are compared with
    ranks = [3 if per_step else 2 for per_step in signature.per_step]
    tasks, shapes = tasks_and_shapes(model, bridge.to_internal(model, "model")[0])
    labels = [None if lab is None else lab.reshape(-1) if shape is None else lab
              for lab, shape in zip(per_output_labels(y, len(arrays[0]), ranks, shapes), shapes,
                                    strict=True)]
    pairs = []
    for e, g, per_step in zip(expected, got, signature.per_step, strict=True):
        e = np.asarray(e, np.float32)
        if per_step:
            pairs.append((e.reshape(-1, *e.shape[2:]), g.reshape(-1, *g.shape[2:])))
        else:
            pairs.append((e, g[:, -1].reshape(e.shape)))
    return verifying.judged(quantization, pairs, labels, len(arrays[0]), loaded.runtime, tasks=tasks)
