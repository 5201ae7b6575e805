"""VIBLSTMCell: Keras's LSTM cell with a VIB mask on each gate activation."""

from tf_vib._keras import keras, tf
from tf_vib.layers.recurrent import VIBRecurrentCell, base_arguments

__all__ = ["VIBLSTMCell"]


@keras.utils.register_keras_serializable(package="tf_vib")
class VIBLSTMCell(VIBRecurrentCell):
    """An LSTM cell whose gate activations carry VIB masks shared across time.

    With gate order i, f, c (``g``), o as in ``keras.layers.LSTMCell`` and the same
    weights (``kernel``, ``recurrent_kernel``, ``bias``)::

        i = sigmoid(.) * z_i,  f = sigmoid(.) * z_f,  g = tanh(.) * z_g,  o = sigmoid(.) * z_o
        c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t)

    ``z = mu + sigma * eps`` while training (one draw per sequence). At inference the
    output-gate mask is ``mu * 1[kept]`` (it folds into the recurrent kernel and the next
    layer exactly); the i, f and c masks are the hard ``1[kept]``, because a scaled
    input, forget or candidate gate has no plain-LSTM equivalent (tanh(s*c) != s*tanh(c)).
    A unit is dead, and ``strip_masks`` removes it, when its o, i or c mask is pruned (with
    a zero initial state its h stays 0); a unit whose f mask alone is pruned becomes a
    memoryless unit. With every mask at mu=1 and no noise the cell equals
    ``keras.layers.LSTMCell``.

    Args:
      units: positive int, the hidden size.
      masked_gates: str, default ``"ifco"``. Which gates carry a mask; ``"o"`` alone masks
        the hidden state only (every mask then folds exactly).
      hard_gates: str, default ``""``. Gates whose mask is hard (``1[kept]``) at inference
        even where its mean would fold (see ``VIBRecurrentCell``).
      activation, recurrent_activation, use_bias, unit_forget_bias, *_initializer,
        *_regularizer, *_constraint, dropout, recurrent_dropout: as in
        ``keras.layers.LSTMCell`` (one dropout mask for every gate, as its implementation 2).
      kl_factor, kl_mult, keep_threshold, mu_initializer, log_sigma2_initializer: see
        ``tf_vib.layers.MaskSettings``.

    Call arguments:
      inputs: (batch, features) tensor of one time step.
      states: ``[h, c]``, each (batch, units).
      training: Python bool or boolean tensor; masks are noisy only while training.

    Returns:
      ``h, [h, c]``.

    Example:

    >>> import numpy as np
    >>> layer = keras.layers.RNN(VIBLSTMCell(4))
    >>> layer(np.zeros((2, 3, 5), "float32")).shape
    TensorShape([2, 4])
    """

    GATES = ("i", "f", "c", "o")
    HOISTS_INPUT_PRODUCT = True
    FOLDING_GATES = frozenset("o")
    UNIT_GATES = "oci"
    STATE_GATE = "o"
    MEMORY_GATE = "f"
    CANDIDATE_GATE = "c"
    PLAIN_CELL = keras.layers.LSTMCell
    PLAIN_LAYER = keras.layers.LSTM

    def __init__(
        self,
        units,
        *,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias=True,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        masked_gates=None,
        hard_gates="",
        kl_factor=1e-4,
        kl_mult=1.0,
        keep_threshold=0.0,
        mu_initializer=None,
        log_sigma2_initializer=None,
        **kwargs,
    ):
        super().__init__(units, **base_arguments(locals(), "unit_forget_bias"), **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.state_size = [self.units, self.units]
        self.output_size = self.units

    def build(self, input_shape):
        input_dim = int(input_shape[-1])
        bias_initializer = self.bias_initializer
        if self.use_bias and self.unit_forget_bias:
            units, base = self.units, self.bias_initializer

            def bias_initializer(_, *args, **kwargs):
                return tf.concat(
                    [
                        base((units,), *args, **kwargs),
                        tf.ones((units,), dtype=kwargs.get("dtype")),
                        base((units * 2,), *args, **kwargs),
                    ],
                    axis=0,
                )

        self._add_kernels(input_dim, 4, (4 * self.units,), bias_initializer)
        self._build_gate_masks()
        self.built = True

    def call(self, inputs, states, training=None):
        h_tm1, c_tm1 = states[0], states[1]
        z = (self._input_projection(self._dropped_inputs(inputs, training))
             + keras.backend.dot(self._dropped_state(h_tm1, training), self.recurrent_kernel))
        if self.use_bias:
            z = keras.backend.bias_add(z, self.bias)
        z_i, z_f, z_c, z_o = tf.split(z, num_or_size_splits=4, axis=1)
        gates = {
            "i": self.recurrent_activation(z_i),
            "f": self.recurrent_activation(z_f),
            "c": self.activation(z_c),
            "o": self.recurrent_activation(z_o),
        }
        for gate, multiplier in self.gate_multipliers(inputs, training).items():
            gates[gate] = gates[gate] * multiplier
        c = gates["f"] * c_tm1 + gates["i"] * gates["c"]
        h = gates["o"] * self.activation(c)
        return h, [h, c]

    def get_config(self):
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}
