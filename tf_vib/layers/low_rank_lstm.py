"""LowRankLSTMCell: Keras's LSTM cell with its recurrent kernel held as two factors."""

from tf_vib._keras import keras, tf

__all__ = ["LowRankLSTMCell"]


@keras.utils.register_keras_serializable(package="tf_vib")
class LowRankLSTMCell(keras.layers.LSTMCell):
    """``keras.layers.LSTMCell`` whose ``u x 4u`` recurrent kernel is ``left @ right``.

    ``left`` is ``u x rank`` and ``right`` is ``rank x 4u``, so the cell stores
    ``rank * 5u`` recurrent weights instead of ``4u**2`` (fewer when ``rank < 0.8 u``).
    Everything else (gates, activations, dropout, the ``kernel`` and ``bias``) is the parent
    cell's: ``recurrent_kernel`` is a property that multiplies the factors, so the parent's
    step runs unchanged. Use it as ``keras.layers.RNN(LowRankLSTMCell(u, rank))``;
    `tf_vib.lowrank.low_rank` puts it in place of an ``LSTM`` from that layer's SVD. TFLite's
    fused LSTM op takes a full recurrent matrix, so a model with this cell converts as a
    loop over time; `tf_vib.lowrank.merge_low_rank` multiplies the factors back into a
    plain ``LSTM`` (same function, full size) where the fused op matters more than size.

    Args:
      units: positive int, the hidden size.
      rank: positive int, the inner size of the factors.
      recurrent_initializer: initializer of each factor (default ``"orthogonal"``).
      activation, recurrent_activation, use_bias, unit_forget_bias, *_initializer,
        *_regularizer, *_constraint, dropout, recurrent_dropout: as in
        ``keras.layers.LSTMCell``, except ``recurrent_regularizer`` and
        ``recurrent_constraint``, which act on a full matrix: only None is accepted.

    Example:

    >>> cell = tf_vib.layers.LowRankLSTMCell(8, rank=2)
    >>> layer = keras.layers.RNN(cell)
    >>> layer(np.zeros((1, 5, 3), "float32")).shape
    TensorShape([1, 8])
    >>> [tuple(w.shape) for w in layer.weights]
    [(3, 32), (8, 2), (2, 32), (32,)]
    """

    def __init__(self, units, rank, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, **kwargs):
        from tf_vib._checks import check_int

        for name, value in (("recurrent_regularizer", recurrent_regularizer),
                            ("recurrent_constraint", recurrent_constraint)):
            if value is not None:
                raise ValueError(f"LowRankLSTMCell: `{name}` acts on a full recurrent matrix and the cell "
                                 f"holds two factors; received {value!r}, accepted: None")
        super().__init__(
            units, activation=activation, recurrent_activation=recurrent_activation, use_bias=use_bias,
            kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer, unit_forget_bias=unit_forget_bias,
            kernel_regularizer=kernel_regularizer, bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint, bias_constraint=bias_constraint, dropout=dropout,
            recurrent_dropout=recurrent_dropout, **kwargs)
        self.rank = check_int("rank", rank, 1)

    def build(self, input_shape):
        four = 4 * self.units
        self.kernel = self.add_weight(shape=(input_shape[-1], four), name="kernel",
                                      initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        self.recurrent_left = self.add_weight(shape=(self.units, self.rank), name="recurrent_left",
                                              initializer=self.recurrent_initializer)
        second = type(self.recurrent_initializer).from_config(self.recurrent_initializer.get_config())
        self.recurrent_right = self.add_weight(shape=(self.rank, four), name="recurrent_right",
                                               initializer=second)  # a fresh instance: its own values
        if self.use_bias:
            def bias_initializer(_, *args, **kwargs):
                if not self.unit_forget_bias:
                    return self.bias_initializer((four,), *args, **kwargs)
                u = self.units
                return tf.concat([self.bias_initializer((u,), *args, **kwargs),
                                  keras.initializers.Ones()((u,), *args, **kwargs),
                                  self.bias_initializer((2 * u,), *args, **kwargs)], axis=0)

            self.bias = self.add_weight(shape=(four,), name="bias", initializer=bias_initializer,
                                        regularizer=self.bias_regularizer, constraint=self.bias_constraint)
        else:
            self.bias = None
        self.built = True

    @property
    def recurrent_kernel(self):
        return tf.matmul(self.recurrent_left, self.recurrent_right)

    def get_config(self):
        return {**super().get_config(), "rank": self.rank}
