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

import numpy as np

from converters.plan._common import LayerPlan, has_input_mask
from tf_vib._keras import keras, tf
from tf_vib.registry import recurrent_kind

__all__ = ["plan_layer", "recurrent_label", "UnrolledGRU", "UnrolledSimpleRNN", "UnrolledBidirectional"]


def recurrent_label(layer):
    """What messages and plans call a recurrent layer (``RNN(GRUCell)``, ``Bidirectional(LSTM)``,
    a custom RNN's class), or None for other layers."""
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
        return f"Bidirectional({recurrent_label(layer.forward_layer)})"
    return None


#: The kinds (`tf_vib.registry.recurrent_kind`) that have an unrolled int8 form.
_UNROLLABLE = ("gru", "simple_rnn")


def _plan_bidirectional(layer, node, int8, recurrent_plan):
    """(LayerPlan, replacement or None) for a ``Bidirectional`` recurrent layer."""
    forward, backward = layer.forward_layer, layer.backward_layer
    kind, inner = recurrent_label(layer), recurrent_label(forward)
    masked = has_input_mask(node)
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
              else "its backward layer differs from its forward one" if recurrent_label(backward) != inner
              else None if recurrent_kind(forward) in _UNROLLABLE else "it has no int8 plan")
    if reason is not None:
        raise ValueError(
            f"layer {layer.name!r} ({kind}) would become two WHILE loops, and full-int8 conversion "
            f"of WHILE loops crashes TFLite (TF 2.21); {reason}. Use quantization='float32', "
            "'dynamic' or 'float16' for this model"
        )
    return (LayerPlan(layer.name, kind, "unrolled over time in both directions, weights stored once"),
            UnrolledBidirectional.from_layer(layer))


def plan_layer(layer, node, int8, recurrent_plan):
    """(LayerPlan, replacement layer or None) for a recurrent layer."""
    if type(layer) is keras.layers.Bidirectional:
        return _plan_bidirectional(layer, node, int8, recurrent_plan)
    kind = recurrent_label(layer)
    masked = has_input_mask(node)
    fusable = recurrent_kind(layer) == "lstm" and not masked and not layer.stateful
    if fusable:
        dropout = getattr(layer.cell, "dropout", 0) or getattr(layer.cell, "recurrent_dropout", 0)
        replacement = _as_lstm(layer) if kind != "LSTM" or layer.unroll or dropout else None
        return LayerPlan(layer.name, kind, "UNIDIRECTIONAL_SEQUENCE_LSTM (fused)"), replacement
    if not int8 or recurrent_plan == "loop":
        why = " (its input carries a Keras mask)" if masked else ""
        return LayerPlan(layer.name, kind, f"WHILE loop{why}"), None
    if masked or layer.stateful or recurrent_kind(layer) not in _UNROLLABLE:
        reason = ("its input carries a Keras mask (remove the Masking layer or mask_zero)"
                  if masked else "it is stateful" if layer.stateful else "it has no int8 plan")
        raise ValueError(
            f"layer {layer.name!r} ({kind}) would become a WHILE loop, and full-int8 conversion "
            f"of WHILE loops crashes TFLite (TF 2.21); {reason}. Use quantization='float32', "
            "'dynamic' or 'float16' for this model"
        )
    return LayerPlan(layer.name, kind, "unrolled over time, weights stored once"), _unrolled(layer)


def _unrolled(layer):
    return (UnrolledGRU if recurrent_kind(layer) == "gru" else UnrolledSimpleRNN).from_layer(layer)


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
