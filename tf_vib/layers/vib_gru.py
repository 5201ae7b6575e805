"""VIBGRUCell: Keras's GRU cell with a VIB mask on each gate activation."""

from tf_vib._keras import keras, tf
from tf_vib.layers.recurrent import VIBRecurrentCell, base_arguments

__all__ = ["VIBGRUCell"]


@keras.utils.register_keras_serializable(package="tf_vib")
class VIBGRUCell(VIBRecurrentCell):
    """A GRU cell whose gate activations carry VIB masks shared across time.

    Gate order z (update), r (reset), h (candidate) and weights as in
    ``keras.layers.GRUCell``, both ``reset_after`` settings::

        z = sigmoid(.) * m_z,   r = sigmoid(.) * m_r,   hh = tanh(.) * m_h
        h_t = z * h_{t-1} + (1 - z) * hh

    At inference the candidate and reset masks are ``mu * 1[kept]`` (they fold exactly:
    a candidate scale rescales the state, a reset scale scales the recurrent candidate
    block), and the update mask is the hard ``1[kept]`` (a scaled update gate has no
    plain-GRU equivalent). A unit whose candidate mask is pruned is dead (its state stays
    0) and ``strip_masks`` removes it; one whose update mask is pruned is memoryless.
    With every mask at mu=1 and no noise the cell equals ``keras.layers.GRUCell``.

    Args:
      units: positive int, the hidden size.
      reset_after: bool, default True (Keras's default and cuDNN's convention).
      masked_gates: str, default ``"zrh"``.
      hard_gates: str, default ``""``. Gates whose mask is hard (``1[kept]``) at inference.
      activation, recurrent_activation, use_bias, *_initializer, *_regularizer,
        *_constraint, dropout, recurrent_dropout: as in ``keras.layers.GRUCell``.
      kl_factor, kl_mult, keep_threshold, mu_initializer, log_sigma2_initializer: see
        ``tf_vib.layers.MaskSettings``.

    Call arguments:
      inputs: (batch, features) tensor of one time step.
      states: ``[h]``, (batch, units).
      training: Python bool or boolean tensor.

    Returns:
      ``h, [h]``.

    Example:

    >>> import numpy as np
    >>> layer = keras.layers.RNN(VIBGRUCell(4))
    >>> layer(np.zeros((2, 3, 5), "float32")).shape
    TensorShape([2, 4])
    """

    GATES = ("z", "r", "h")
    HOISTS_INPUT_PRODUCT = True
    FOLDING_GATES = frozenset("rh")
    UNIT_GATES = "h"
    STATE_GATE = "h"
    MEMORY_GATE = "z"
    CANDIDATE_GATE = "h"
    PLAIN_CELL = keras.layers.GRUCell
    PLAIN_LAYER = keras.layers.GRU

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
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        reset_after=True,
        masked_gates=None,
        hard_gates="",
        kl_factor=1e-4,
        kl_mult=1.0,
        keep_threshold=0.0,
        mu_initializer=None,
        log_sigma2_initializer=None,
        **kwargs,
    ):
        super().__init__(units, **base_arguments(locals(), "reset_after"), **kwargs)
        self.reset_after = bool(reset_after)
        self.state_size = self.units
        self.output_size = self.units

    def build(self, input_shape):
        bias_shape = (2, 3 * self.units) if self.reset_after else (3 * self.units,)
        self._add_kernels(int(input_shape[-1]), 3, bias_shape, self.bias_initializer)
        self._build_gate_masks()
        self.built = True

    def call(self, inputs, states, training=None):
        h_tm1 = states[0] if tf.nest.is_nested(states) else states
        units = self.units
        input_bias = recurrent_bias = None
        if self.use_bias:
            if self.reset_after:
                input_bias, recurrent_bias = tf.unstack(self.bias)
            else:
                input_bias = self.bias
        matrix_x = self._input_projection(self._dropped_inputs(inputs, training))
        h_rec = self._dropped_state(h_tm1, training)
        if input_bias is not None:
            matrix_x = keras.backend.bias_add(matrix_x, input_bias)
        x_z, x_r, x_h = tf.split(matrix_x, 3, axis=-1)
        if self.reset_after:
            matrix_inner = keras.backend.dot(h_rec, self.recurrent_kernel)
            if recurrent_bias is not None:
                matrix_inner = keras.backend.bias_add(matrix_inner, recurrent_bias)
        else:
            matrix_inner = keras.backend.dot(h_rec, self.recurrent_kernel[:, : 2 * units])
        rec_z, rec_r, rec_h = tf.split(matrix_inner, [units, units, -1], axis=-1)
        multipliers = self.gate_multipliers(inputs, training)
        z = self.recurrent_activation(x_z + rec_z)
        r = self.recurrent_activation(x_r + rec_r)
        if "z" in multipliers:
            z = z * multipliers["z"]
        if "r" in multipliers:
            r = r * multipliers["r"]
        if self.reset_after:
            rec_h = r * rec_h
        else:
            rec_h = keras.backend.dot(r * h_rec, self.recurrent_kernel[:, 2 * units :])
        hh = self.activation(x_h + rec_h)
        if "h" in multipliers:
            hh = hh * multipliers["h"]
        h = z * h_tm1 + (1 - z) * hh
        return h, [h]

    def _fold_gates(self, values, units, kernel, recurrent, bias):
        n = len(units)
        reset = values["r"][units]
        if self.reset_after:  # r scales the recurrent candidate block: its columns
            recurrent[:, 2 * n:] *= reset[None, :]
            if bias is not None:
                bias[1, 2 * n:] *= reset
        else:  # r scales h_{t-1} before the candidate block: its rows
            recurrent[:, 2 * n:] *= reset[:, None]

    def get_config(self):
        return {**super().get_config(), "reset_after": self.reset_after}
