"""The Keras side of conversion: what each layer becomes in TFLite, and the exported graph.

TFLite has one fused recurrent kernel that matters here, ``UNIDIRECTIONAL_SEQUENCE_LSTM``,
and it only comes from a ``tf_keras`` ``LSTM`` traced with a fixed batch size. Every other
recurrent layer becomes a ``WHILE`` loop, which converts to float32, dynamic-range and
float16, but crashes TFLite's full-int8 quantizer (TF 2.21, checked: a segfault in the
converter, for Keras's loop and for a hand-written ``tf.while_loop`` alike). So for int8:

| layer | float32 / dynamic / float16 | int8 |
|---|---|---|
| ``LSTM`` (no Keras mask on its input) | fused LSTM op | fused LSTM op |
| ``RNN(LSTMCell)`` | rebuilt as ``LSTM``: fused LSTM op | fused LSTM op |
| ``GRU``, ``RNN(GRUCell)`` | ``WHILE`` loop | unrolled (`UnrolledGRU`) |
| ``SimpleRNN`` | ``WHILE`` loop | unrolled (`UnrolledSimpleRNN`) |
| any recurrent layer fed a Keras mask | ``WHILE`` loop | refused before converting |
| other RNNs (custom cells) | ``WHILE`` loop | refused before converting |
| ``Bidirectional(LSTM)`` | 2 fused LSTM ops, ``REVERSE_V2`` | the same |
| ``Bidirectional(GRU / SimpleRNN)`` | 2 ``WHILE`` loops | both directions unrolled |
| other ``Bidirectional`` (masked, ``merge_mode=None``) | 2 ``WHILE`` loops | refused before converting |

The unrolled layers compute every step's input projection in one matrix product before
the loop and reuse one recurrent kernel at every step, so the file holds each weight once;
it still grows by a few kilobytes of graph per time step (tensors and their quantization
parameters), which is why the float modes keep the loop.
"""

import dataclasses

import numpy as np

from converters.inputs import input_specs, output_names
from tf_vib._graph import call_counts, graph_nodes, rebuild, tensor_users
from tf_vib._keras import keras, require_tf_keras_model, tf
from tf_vib.compress import UNIT_MULTIPLE
from tf_vib.layers.base import is_vib_layer

__all__ = [
    "FEATURE_SELECTIONS",
    "LayerPlan",
    "fold_feature_selection",
    "pad_units",
    "padded_units",
    "resolve_unit_multiple",
    "prepare",
    "UnrolledGRU",
    "UnrolledSimpleRNN",
    "UnrolledBidirectional",
    "export_function",
    "unsupported_ops",
    "without_masks",
]

#: What a ``SelectFeatures`` gather (the kept input features of a stripped model) becomes:
#: ``auto`` folds it into zero rows of the next layer's kernel when that is cheap (see
#: `fold_feature_selection`), ``gather`` always keeps the GATHER op, ``zero_rows`` always folds
#: (and raises where it cannot).
FEATURE_SELECTIONS = ("auto", "gather", "zero_rows")
#: ``auto`` folds when the zero rows add at most this many weights ...
FOLD_MAX_EXTRA_WEIGHTS = 256
#: ... and at most this share of the kernel they are added to.
FOLD_MAX_GROWTH = 0.25

#: ``unit_multiple="auto"``: the fused LSTM's units are padded to a multiple of this in the
#: float modes (float32, dynamic, float16), and left as they are in int8 (see `pad_units`).
#: It is the multiple compress() trims its LSTMs to when accuracy allows.
AUTO_UNIT_MULTIPLE = UNIT_MULTIPLE

#: TensorFlow ops that TFLite cannot run at all (they call back into Python).
_PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


@dataclasses.dataclass
class LayerPlan:
    """What one recurrent layer becomes in the TFLite file."""

    name: str
    kind: str
    becomes: str

    def __str__(self):
        return f"{self.name} ({self.kind}) -> {self.becomes}"


def _recurrent_kind(layer):
    cell = getattr(layer, "cell", None)
    if type(layer) is keras.layers.LSTM:
        return "LSTM"
    if type(layer) is keras.layers.GRU:
        return "GRU"
    if type(layer) is keras.layers.SimpleRNN:
        return "SimpleRNN"
    if type(layer) is keras.layers.RNN:
        for cell_type, kind in ((keras.layers.LSTMCell, "RNN(LSTMCell)"),
                                (keras.layers.GRUCell, "RNN(GRUCell)"),
                                (keras.layers.SimpleRNNCell, "RNN(SimpleRNNCell)")):
            if type(cell) is cell_type:
                return kind
        return f"RNN({type(cell).__name__})"
    if isinstance(layer, keras.layers.RNN):
        return type(layer).__name__
    if type(layer) is keras.layers.Bidirectional:
        return f"Bidirectional({_recurrent_kind(layer.forward_layer)})"
    return None


def _has_input_mask(node):
    return any(getattr(t, "_keras_mask", None) is not None for t in node.keras_inputs)


_UNROLLABLE = ("GRU", "RNN(GRUCell)", "SimpleRNN", "RNN(SimpleRNNCell)")


def _plan_bidirectional(layer, node, int8, recurrent_plan):
    """(LayerPlan, replacement or None) for a ``Bidirectional`` recurrent layer."""
    forward, backward = layer.forward_layer, layer.backward_layer
    kind, inner = _recurrent_kind(layer), _recurrent_kind(forward)
    masked = _has_input_mask(node)
    stateful = forward.stateful or backward.stateful
    if (type(forward) is type(backward) is keras.layers.LSTM and not masked and not stateful
            and not forward.unroll and not backward.unroll):
        replacement = None
        if any(d.cell.dropout or d.cell.recurrent_dropout for d in (forward, backward)):
            replacement = keras.layers.Bidirectional(_as_lstm(forward), backward_layer=_as_lstm(backward),
                                                     merge_mode=layer.merge_mode, name=layer.name)
            replacement._tf_vib_weights = layer.get_weights()  # dropout has no weights: the same list
        return LayerPlan(layer.name, kind, "2 UNIDIRECTIONAL_SEQUENCE_LSTM (fused, one per direction) "
                                           "and REVERSE_V2"), replacement
    if not int8 or recurrent_plan == "loop":
        why = " (its input carries a Keras mask)" if masked else ""
        return LayerPlan(layer.name, kind, f"2 WHILE loops{why}"), None
    reason = ("its input carries a Keras mask (remove the Masking layer or mask_zero)" if masked
              else "it is stateful" if stateful
              else "it returns its states" if layer.return_state
              else "merge_mode=None gives two outputs" if layer.merge_mode is None
              else "its backward layer differs from its forward one" if _recurrent_kind(backward) != inner
              else None if inner in _UNROLLABLE else "it has no int8 plan")
    if reason is not None:
        raise ValueError(
            f"layer {layer.name!r} ({kind}) would become two WHILE loops, and full-int8 conversion "
            f"of WHILE loops crashes TFLite (TF 2.21); {reason}. Use quantization='float32', "
            "'dynamic' or 'float16' for this model"
        )
    return (LayerPlan(layer.name, kind, "unrolled over time in both directions, weights stored once"),
            UnrolledBidirectional.from_layer(layer))


def _plan_layer(layer, node, int8, recurrent_plan):
    """(LayerPlan, replacement layer or None) for a recurrent layer."""
    if type(layer) is keras.layers.Bidirectional:
        return _plan_bidirectional(layer, node, int8, recurrent_plan)
    kind = _recurrent_kind(layer)
    masked = _has_input_mask(node)
    fusable = kind in ("LSTM", "RNN(LSTMCell)") and not masked and not layer.stateful
    if fusable:
        dropout = getattr(layer.cell, "dropout", 0) or getattr(layer.cell, "recurrent_dropout", 0)
        replacement = _as_lstm(layer) if kind != "LSTM" or layer.unroll or dropout else None
        return LayerPlan(layer.name, kind, "UNIDIRECTIONAL_SEQUENCE_LSTM (fused)"), replacement
    if not int8 or recurrent_plan == "loop":
        why = " (its input carries a Keras mask)" if masked else ""
        return LayerPlan(layer.name, kind, f"WHILE loop{why}"), None
    if masked or layer.stateful or kind not in _UNROLLABLE:
        reason = ("its input carries a Keras mask (remove the Masking layer or mask_zero)"
                  if masked else "it is stateful" if layer.stateful else "it has no int8 plan")
        raise ValueError(
            f"layer {layer.name!r} ({kind}) would become a WHILE loop, and full-int8 conversion "
            f"of WHILE loops crashes TFLite (TF 2.21); {reason}. Use quantization='float32', "
            "'dynamic' or 'float16' for this model"
        )
    return LayerPlan(layer.name, kind, "unrolled over time, weights stored once"), _unrolled(layer)


def _unrolled(layer):
    return (UnrolledGRU if "GRU" in _recurrent_kind(layer) else UnrolledSimpleRNN).from_layer(layer)


def _kernel_rows_are_features(layer):
    """True for layers whose first weight is a kernel with one row per input feature."""
    if type(layer) in (keras.layers.Dense, keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN):
        return True
    return type(layer) is keras.layers.RNN and type(layer.cell) in (
        keras.layers.LSTMCell, keras.layers.GRUCell, keras.layers.SimpleRNNCell)


def _one_kernel_consumer(node, users, model, calls):
    """Why the output of ``node`` is not the sole input of one kernel layer (Dense, LSTM,
    GRU, SimpleRNN) whose kernel rows can change, or None if it is.

    ``calls`` counts the nodes of each layer in this model's graph (a stripped Sequential
    reuses layers that were called once more to build it, so the layers' own node lists
    are longer than one).
    """
    if any(node.outputs is t for t in model.outputs):
        return "its output is a model output"
    if len(users) != 1:
        return f"its output feeds {len(users)} layers"
    consumer = users[0].layer
    if not _kernel_rows_are_features(consumer):
        return f"it feeds a {type(consumer).__name__}"
    if len(users[0].keras_inputs) != 1:
        return f"{consumer.name!r} is called with more than one input"
    if set(users[0].call_kwargs) - {"training", "mask"}:
        return f"{consumer.name!r} is called with {sorted(set(users[0].call_kwargs) - {'training', 'mask'})}"
    if calls[id(node.layer)] != 1 or calls[id(consumer)] != 1:
        return "a layer is shared"
    return None


def fold_feature_selection(model, feature_selection="auto"):
    """The model with each ``SelectFeatures`` gather folded into the next layer's kernel.

    ``strip_masks`` keeps a model's input signature by putting a ``SelectFeatures``
    (a TFLite ``GATHER``) before the first layer when a FeatureMask removed input
    features. The same model without the gather, its next layer's kernel holding a zero
    row for each removed feature, computes the same outputs as long as the removed
    features hold finite values: zero times NaN or infinity is NaN, where the gather
    ignored them. Use ``"gather"`` if removed inputs may carry NaN (an unplugged sensor). Which one is faster is a
    trade: the GATHER costs about 1.5-2 us per invoke with ai-edge-litert 2.3 on x86 (29
    steps, measured side by side: LSTM(12) on 11 of 12 features 23.8 us with the gather,
    22.1 us with a zero row; the LSTM(8) floor 19.9 us), while the zero rows add
    ``removed features x kernel columns`` multiplications per step and as many weights to
    the file (on 64 features of which 20 are kept, an LSTM(20) took 30.2 us with the
    gather and 35.2 us with the zero rows). ``auto`` therefore folds only when the zero
    rows add at most `FOLD_MAX_EXTRA_WEIGHTS` weights and at most `FOLD_MAX_GROWTH` of
    the kernel.

    Args:
      model: a plain tf_keras model; it is not modified.
      feature_selection: one of `FEATURE_SELECTIONS`.

    Returns:
      ``(model, [LayerPlan])``: the model (the same object if nothing was folded) and one
      plan per ``SelectFeatures`` layer saying what it became.
    """
    from tf_vib.layers.select_features import SelectFeatures

    if feature_selection not in FEATURE_SELECTIONS:
        raise ValueError(f"`feature_selection` must be one of {list(FEATURE_SELECTIONS)}; "
                         f"received {feature_selection!r}")
    nodes = list(graph_nodes(model))
    users = tensor_users(model)
    calls = call_counts(model)
    plans, replacements = [], {}
    for node in nodes:
        layer = node.layer
        if not isinstance(layer, SelectFeatures):
            continue
        consumers = users.get(id(node.outputs), [])
        why = _one_kernel_consumer(node, consumers, model, calls)
        total = node.keras_inputs[0].shape[-1] if node.keras_inputs else None
        if why is None and total is None:
            why = "its input's feature count is unknown"
        if why is None:
            consumer = consumers[0].layer
            weights = consumer.get_weights()
            kernel = weights[0]
            extra = (int(total) - kernel.shape[0]) * kernel.shape[1]
            cheap = extra <= min(FOLD_MAX_EXTRA_WEIGHTS, FOLD_MAX_GROWTH * kernel.size)
            if feature_selection == "gather" or (feature_selection == "auto" and not cheap):
                why = (f"zero rows would add {extra:,} weights to {consumer.name!r}"
                       if feature_selection == "auto" else "feature_selection='gather'")
        if why is not None:
            if feature_selection == "zero_rows":
                raise ValueError(f"feature_selection='zero_rows' cannot fold {layer.name!r}: {why}; "
                                 "use 'auto' or 'gather'")
            plans.append(LayerPlan(layer.name, "SelectFeatures", f"GATHER ({why})"))
            continue
        full = np.zeros((int(total), kernel.shape[1]), kernel.dtype)
        full[np.asarray(layer.indices)] = kernel
        folded = type(consumer).from_config(consumer.get_config())
        folded._tf_vib_weights = [full] + weights[1:]
        replacements[id(consumer)] = folded
        replacements[id(layer)] = keras.layers.Activation("linear", name=layer.name)
        plans.append(LayerPlan(layer.name, "SelectFeatures",
                               f"zero rows in {consumer.name!r} (+{extra:,} weights, no GATHER)"))
    return (_clone_with(model, replacements) if replacements else model), plans


def resolve_unit_multiple(unit_multiple, quantization):
    """The multiple the fused LSTMs' units are padded to: an int >= 1 (1: no padding)."""
    if unit_multiple == "auto":
        return 1 if quantization == "int8" else AUTO_UNIT_MULTIPLE
    if isinstance(unit_multiple, bool) or not isinstance(unit_multiple, (int, np.integer)) or unit_multiple < 1:
        raise ValueError(f"`unit_multiple` must be 'auto' or an integer >= 1 (1: no padding); "
                         f"received {unit_multiple!r}")
    return int(unit_multiple)


def padded_units(units, multiple):
    """``units`` rounded up to a multiple of ``multiple``: the size `pad_units` gives an LSTM."""
    return -(-units // multiple) * multiple


def _zero_preserving(activation):
    """True if ``activation(0) == 0``: a unit whose inputs are all zero then stays at zero."""
    return float(tf.reshape(activation(tf.zeros([1])), [-1])[0]) == 0.0


def _paddable(node, users, model, calls):
    """Why the ``keras.layers.LSTM`` of ``node`` cannot get zero units, or None if it can."""
    layer = node.layer
    if _has_input_mask(node) or layer.stateful or layer.return_state:
        return "it is masked, stateful or returns its state"
    if not _zero_preserving(layer.activation):
        return f"its activation {layer.activation.__name__} is not zero at zero"
    if len(node.keras_inputs) != 1:
        return "it takes an initial state"
    return _one_kernel_consumer(node, users, model, calls)


def _pad_gates(array, units, padded, axis):
    """``array`` with each of its 4 gate blocks of ``units`` along ``axis`` zero-padded to ``padded``."""
    blocks = np.split(array, 4, axis=axis)
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, padded - units)
    return np.concatenate([np.pad(block, widths) for block in blocks], axis=axis)


def pad_units(model, multiple):
    """The model with each fused LSTM's units padded with zero units to a multiple of ``multiple``.

    TFLite's float kernels work on 4 floats at a time, and a unit count that is not a
    multiple of 4 pays for the remainder: side by side (ai-edge-litert 2.3, 26 steps x 12
    features, LSTM(u) -> Dense), LSTM(11) took 1.25x the time of LSTM(8) and LSTM(12)
    1.13x on x86; on an emulated Cortex-A72 (a Raspberry Pi 4, instructions per invoke)
    LSTM(11) 1.25x and LSTM(12) 1.17x, LSTM(13) 1.44x and LSTM(16) 1.36x. The full-int8
    kernel grows with every unit on x86 (LSTM(12) 1.47x, LSTM(11) 1.36x), so ``"auto"``
    pads only the float modes.

    A zero unit (zero kernel and recurrent columns, zero bias) has gates at
    ``sigmoid(0)`` and a candidate ``tanh(0) = 0``, so its cell and output stay exactly 0
    from the zero initial state; its rows in the next layer's kernel are zero as well, so
    the outputs are unchanged. Only LSTMs that will become the fused op, whose output
    feeds one kernel layer (Dense, LSTM, GRU, SimpleRNN), are padded.

    Args:
      model: a plain tf_keras model; it is not modified.
      multiple: int >= 1; 1 leaves the model as it is.

    Returns:
      ``(model, [LayerPlan])``: the model (the same object if nothing was padded) and one
      plan per LSTM whose units are not already a multiple, saying what it became.
    """
    if multiple == 1:
        return model, []
    nodes = list(graph_nodes(model))
    users = tensor_users(model)
    calls = call_counts(model)
    plans, weights, configs = [], {}, {}
    for node in nodes:
        layer = node.layer
        units = getattr(layer, "units", None)
        if type(layer) is not keras.layers.LSTM or units % multiple == 0:
            continue
        consumers = users.get(id(node.outputs), [])
        why = _paddable(node, consumers, model, calls)
        if why is not None:
            plans.append(LayerPlan(layer.name, "LSTM", f"{units} units, not padded ({why})"))
            continue
        padded = padded_units(units, multiple)
        own = weights.setdefault(id(layer), layer.get_weights())
        own[0] = _pad_gates(own[0], units, padded, axis=1)
        own[1] = _pad_gates(np.pad(own[1], ((0, padded - units), (0, 0))), units, padded, axis=1)
        if layer.use_bias:
            own[2] = _pad_gates(own[2], units, padded, axis=0)
        configs[id(layer)] = {**configs.get(id(layer), layer.get_config()), "units": padded}
        consumer = consumers[0].layer
        theirs = weights.setdefault(id(consumer), consumer.get_weights())
        theirs[0] = np.pad(theirs[0], ((0, padded - units), (0, 0)))
        configs.setdefault(id(consumer), consumer.get_config())
        plans.append(LayerPlan(layer.name, "LSTM", f"{padded} units: {padded - units} zero "
                                                   f"unit{'s' if padded - units > 1 else ''} added (a "
                                                   f"multiple of {multiple} runs faster)"))
    if not weights:
        return model, plans
    replacements = {}
    for layer in model.layers:
        if id(layer) in weights:
            replacement = type(layer).from_config(configs[id(layer)])
            replacement._tf_vib_weights = weights[id(layer)]
            replacements[id(layer)] = replacement
    return _clone_with(model, replacements), plans


def _as_lstm(layer):
    cell = layer.cell
    # Dropout acts only while training; a recurrent dropout would keep Keras off the fused
    # kernel that TFLite recognises.
    config = {key: value for key, value in cell.get_config().items()
              if key not in ("name", "trainable", "dtype", "implementation", "dropout", "recurrent_dropout")}
    lstm = keras.layers.LSTM(
        **config, return_sequences=layer.return_sequences, go_backwards=layer.go_backwards,
        time_major=layer.time_major, name=layer.name,
    )
    lstm._tf_vib_weights = [w.numpy() for w in (cell.kernel, cell.recurrent_kernel)] + (
        [cell.bias.numpy()] if cell.use_bias else [])
    return lstm


class _Unrolled(keras.layers.Layer):
    """A recurrent layer written out step by step for a known number of time steps."""

    def __init__(self, source_config, weights, **kwargs):
        super().__init__(name=source_config["name"], **kwargs)
        self.source_config = source_config
        self.units = source_config["units"]
        self.activation = keras.activations.get(source_config["activation"])
        self.return_sequences = source_config["return_sequences"]
        self.go_backwards = source_config["go_backwards"]
        self.use_bias = source_config["use_bias"]
        self._source_weights = [np.asarray(w) for w in weights]

    @classmethod
    def from_layer(cls, layer):
        config = dict(layer.get_config())
        if "cell" in config:  # a keras.layers.RNN around a plain cell
            config = {**config, **layer.cell.get_config(), "name": layer.name}
        return cls(config, layer.get_weights())

    def build(self, input_shape):
        if input_shape[1] is None:
            raise ValueError(f"layer {self.name!r} needs a known number of time steps to unroll")
        self._add_source_weights()
        super().build(input_shape)

    def _add_source_weights(self):
        self.kernel, self.recurrent_kernel, *bias = [
            self.add_weight(name=name, shape=w.shape, initializer=keras.initializers.Constant(w),
                            trainable=False)
            for name, w in zip(("kernel", "recurrent_kernel", "bias"), self._source_weights, strict=False)
        ]
        self.bias = bias[0] if bias else None

    def _projected_steps(self, inputs, input_bias, splits=None):
        """``x_t @ kernel + bias`` for every step in one product, split by step (and gate)."""
        steps, features = int(inputs.shape[1]), int(inputs.shape[2])
        projected = tf.matmul(tf.reshape(inputs, (-1, features)), self.kernel)
        if input_bias is not None:
            projected = projected + input_bias
        projected = tf.reshape(projected, (-1, steps, projected.shape[-1]))
        if self.go_backwards:
            projected = tf.reverse(projected, axis=[1])
        parts = tf.split(projected, splits, axis=-1) if splits else [projected]
        return list(zip(*(tf.unstack(part, axis=1) for part in parts), strict=True))

    def _finish(self, outputs):
        return tf.stack(outputs, axis=1) if self.return_sequences else outputs[-1]


class UnrolledGRU(_Unrolled):
    """A ``GRU`` (either ``reset_after``) unrolled with one copy of each weight.

    Per step: one matrix product with the recurrent kernel and ten element-wise ops;
    the update and reset gates share one activation.
    """

    def _reset_after(self):
        return self.source_config.get("reset_after", True)

    def input_bias(self):
        """The bias added to ``x_t @ kernel`` (the recurrent one, if any, is added in `step`)."""
        if self.bias is None:
            return None
        return self.bias[0] if self._reset_after() else self.bias

    def step(self, x_zr, x_h, h):
        """The next state from the projected input (update/reset and candidate parts) and ``h``."""
        units, reset_after = self.units, self._reset_after()
        recurrent_activation = keras.activations.get(self.source_config["recurrent_activation"])
        inner = tf.matmul(h, self.recurrent_kernel if reset_after else self.recurrent_kernel[:, : 2 * units])
        if reset_after and self.bias is not None:
            inner = inner + self.bias[1]
        inner_zr, inner_h = tf.split(inner, [2 * units, units], axis=-1) if reset_after else (inner, None)
        z, r = tf.split(recurrent_activation(x_zr + inner_zr), 2, axis=-1)
        if reset_after:
            hh = self.activation(x_h + r * inner_h)
        else:
            hh = self.activation(x_h + tf.matmul(r * h, self.recurrent_kernel[:, 2 * units :]))
        return hh + z * (h - hh)

    def call(self, inputs):
        h = tf.zeros((tf.shape(inputs)[0], self.units), inputs.dtype)
        outputs = []
        for x_zr, x_h in self._projected_steps(inputs, self.input_bias(), [2 * self.units, self.units]):
            h = self.step(x_zr, x_h, h)
            outputs.append(h)
        return self._finish(outputs)


class UnrolledSimpleRNN(_Unrolled):
    """A ``SimpleRNN`` unrolled with one copy of each weight."""

    def input_bias(self):
        return self.bias

    def step(self, x_t, h):
        """The next state from the projected input ``x_t @ kernel + bias`` and ``h``."""
        return self.activation(x_t + tf.matmul(h, self.recurrent_kernel))

    def call(self, inputs):
        h = tf.zeros((tf.shape(inputs)[0], self.units), inputs.dtype)
        outputs = []
        for (x_t,) in self._projected_steps(inputs, self.bias):
            h = self.step(x_t, h)
            outputs.append(h)
        return self._finish(outputs)


class UnrolledBidirectional(keras.layers.Layer):
    """A ``Bidirectional`` GRU or SimpleRNN, each direction unrolled (`UnrolledGRU`...).

    As Keras does, the backward layer reads the steps from last to first, and its per-step
    outputs are put back in time order before the two directions are merged.
    """

    def __init__(self, forward, backward, merge_mode, name, **kwargs):
        super().__init__(name=name, **kwargs)
        self.forward, self.backward, self.merge_mode = forward, backward, merge_mode

    @classmethod
    def from_layer(cls, layer):
        return cls(_unrolled(layer.forward_layer), _unrolled(layer.backward_layer), layer.merge_mode, layer.name)

    def call(self, inputs):
        forward, backward = self.forward(inputs), self.backward(inputs)
        if self.backward.return_sequences:
            backward = tf.reverse(backward, axis=[1])
        if self.merge_mode == "concat":
            return tf.concat([forward, backward], axis=-1)
        if self.merge_mode == "sum":
            return forward + backward
        return (forward + backward) / 2 if self.merge_mode == "ave" else forward * backward


def prepare(model, *, quantization, batch_size, time_steps=None, recurrent_plan="auto",
            feature_selection="auto", unit_multiple="auto"):
    """A plain model ready to trace, its input spec, and the plan of its layers.

    VIB layers are stripped first (``tf_vib.strip_masks``), then each ``SelectFeatures``
    gather is folded into zero kernel rows where that is cheaper
    (`fold_feature_selection`), recurrent layers get their TFLite form, and fused LSTMs
    are padded to a multiple of ``unit_multiple`` units (`pad_units`). The user's model is
    not modified: layers that need another form are rebuilt in a clone.

    Returns:
      ``(model, [tf.TensorSpec], [LayerPlan])``: one spec per input (see `input_specs`);
      the plans of the recurrent layers, then those of the ``SelectFeatures`` layers, then
      those of the padding.
    """
    multiple = resolve_unit_multiple(unit_multiple, quantization)
    model = without_masks(model)
    specs = input_specs(model, batch_size, time_steps)
    model = _with_fixed_steps(model, specs)
    model, feature_plans = fold_feature_selection(model, feature_selection)
    plans, replacements = [], {}
    for node in graph_nodes(model):
        if _recurrent_kind(node.layer) is None:
            continue
        plan, replacement = _plan_layer(node.layer, node, quantization == "int8", recurrent_plan)
        plans.append(plan)
        if replacement is not None:
            replacements[id(node.layer)] = replacement
    if replacements:
        model = _clone_with(model, replacements)
    model, padding_plans = pad_units(model, multiple)
    return model, specs, plans + feature_plans + padding_plans


def without_masks(model):
    """``model`` with its VIB layers stripped (``tf_vib.strip_masks``), or ``model`` itself."""
    require_tf_keras_model(model, "model")
    if any(is_vib_layer(layer) or type(layer).__name__ == "FeatureMask" for layer in model.layers):
        from tf_vib.surgery import strip_masks

        return strip_masks(model)
    return model


def _with_fixed_steps(model, specs):
    """``model`` rebuilt on inputs of the specs' number of steps, where its own is None (an
    unrolled layer needs to know it)."""
    if all(None not in tensor.shape[1:] for tensor in model.inputs):
        return model
    steps = {id(tensor): spec.shape[1:] for tensor, spec in zip(model.inputs, specs, strict=True)}

    def new_input(tensor, name):
        return keras.Input(shape=tuple(steps[id(tensor)]), dtype=tensor.dtype, name=name)

    return rebuild(model, new_input=new_input)


def _clone_with(model, replacements):
    """``model`` rebuilt (`tf_vib._graph.rebuild`) with the layers of ``replacements``
    (``{id(layer): new layer}``, weights in ``new._tf_vib_weights`` where they change)."""
    def replace(call):
        new = replacements.get(id(call.layer))
        if new is None:
            return None
        outputs = call.call(new)
        if hasattr(new, "_tf_vib_weights"):
            new.set_weights(new._tf_vib_weights)
        return outputs

    return rebuild(model, replace)


def export_function(model, specs, names=None):
    """The model's inference as a ``tf.function`` with a fixed input signature.

    Its outputs are a dict by ``names`` (default `output_names`); the worker puts the
    file's inputs and outputs in the Keras model's order.
    """
    names, structure = names or output_names(model), model.input

    def call(*inputs):
        nested = inputs[0] if len(inputs) == 1 else tf.nest.pack_sequence_as(structure, list(inputs))
        outputs = tf.nest.flatten(model(nested, training=False))
        return dict(zip(names, outputs, strict=True))

    return tf.function(call, input_signature=list(specs))


def unsupported_ops(function, model):
    """``[(op type, layer name)]`` for the ops of ``function`` that TFLite cannot run."""
    graph = function.get_concrete_function().graph
    found = []
    defs = [graph.as_graph_def()]
    nodes = [n for g in defs for n in g.node] + [
        n for g in defs for f in g.library.function for n in f.node_def
    ]
    layer_names = {layer.name for layer in model.layers}
    for node in nodes:
        if node.op in _PYTHON_OPS:
            parts = node.name.split("/")
            layer = next((p for p in parts if p in layer_names), parts[0])
            found.append((node.op, layer))
    return found
