"""VIBSimpleRNNCell: Keras's SimpleRNN cell with a VIB mask on its output."""

from tf_vib._keras import keras
from tf_vib.layers.recurrent import VIBRecurrentCell, base_arguments

__all__ = ["VIBSimpleRNNCell"]


@keras.utils.register_keras_serializable(package="tf_vib")
class VIBSimpleRNNCell(VIBRecurrentCell):
    """A SimpleRNN cell whose output carries a VIB mask shared across time.

    With the weights of ``keras.layers.SimpleRNNCell`` (``kernel``, ``recurrent_kernel``,
    ``bias``)::

        h_t = activation(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias) * m_h

    The mask is ``mu * 1[kept]`` at inference: it scales the state, which folds exactly
    into the rows of ``recurrent_kernel`` and of the next layer's kernel, as a GRU's
    candidate mask does. A unit whose mask is pruned outputs 0 at every step and
    ``strip_masks`` removes it. With the mask at mu=1 and no noise the cell equals
    ``keras.layers.SimpleRNNCell``.

    Args:
      units: positive int, the hidden size.
      masked_gates: str, default ``"h"`` (the only gate).
      hard_gates: str, default ``""``; ``"h"`` makes the mask hard (``1[kept]``) at inference.
      activation, use_bias, *_initializer, *_regularizer, *_constraint, dropout,
        recurrent_dropout: as in ``keras.layers.SimpleRNNCell``.
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
    >>> layer = keras.layers.RNN(VIBSimpleRNNCell(4))
    >>> layer(np.zeros((2, 3, 5), "float32")).shape
    TensorShape([2, 4])
    """

    GATES = ("h",)
    HOISTS_INPUT_PRODUCT = True
    FOLDING_GATES = frozenset("h")
    UNIT_GATES = "h"
    STATE_GATE = "h"
    MEMORY_GATE = None
    CANDIDATE_GATE = "h"
    PLAIN_CELL = keras.layers.SimpleRNNCell
    PLAIN_LAYER = keras.layers.SimpleRNN

    def __init__(
        self,
        units,
        *,
        activation="tanh",
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
        masked_gates=None,
        hard_gates="",
        kl_factor=1e-4,
        kl_mult=1.0,
        keep_threshold=0.0,
        mu_initializer=None,
        log_sigma2_initializer=None,
        **kwargs,
    ):
        super().__init__(units, **base_arguments(locals()), **kwargs)
        self.state_size = self.units
        self.output_size = self.units

    def build(self, input_shape):
        self._add_kernels(int(input_shape[-1]), 1, (self.units,), self.bias_initializer)
        self._build_gate_masks()
        self.built = True

    def call(self, inputs, states, training=None):
        h_tm1 = states[0] if isinstance(states, (list, tuple)) else states
        h = self._input_projection(self._dropped_inputs(inputs, training))
        if self.use_bias:
            h = keras.backend.bias_add(h, self.bias)
        h = self.activation(h + keras.backend.dot(self._dropped_state(h_tm1, training), self.recurrent_kernel))
        multipliers = self.gate_multipliers(inputs, training)
        if "h" in multipliers:
            h = h * multipliers["h"]
        return h, [h]
