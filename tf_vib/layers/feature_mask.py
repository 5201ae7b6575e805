"""FeatureMask: a VIB mask on the last axis of a (batch, features) or (batch, time, features) tensor."""

from tf_vib._keras import keras, tf
from tf_vib.layers.base import VIBLayerMixin
from tf_vib.layers.vib_mask import select

__all__ = ["FeatureMask"]


@keras.utils.register_keras_serializable(package="tf_vib")
class FeatureMask(VIBLayerMixin, keras.layers.Layer):
    """VIB mask on input features or on a Dense layer's units.

    ``z = x * (mu + sigma * eps)`` while training, with one noise draw per sample shared
    across time steps; ``z = x * mu * 1[log_alpha < keep_threshold]`` at inference. Put it
    in front of a recurrent layer to prune input features, or after a hidden Dense layer
    to prune that layer's units. Its mean always folds exactly into the next layer's kernel
    rows, so ``strip_masks`` leaves no trace of it.

    Args:
      kl_factor, kl_mult, keep_threshold, mu_initializer, log_sigma2_initializer: see
        ``tf_vib.layers.MaskSettings``.
      **kwargs: base Layer arguments (``name``, ``dtype``...).

    Call arguments:
      inputs: a float tensor of rank 2 or 3 whose last axis is known.
      training: Python bool or boolean tensor; noise is drawn only while training.

    Returns:
      A tensor of the same shape as ``inputs``.

    Example:

    >>> import numpy as np
    >>> layer = FeatureMask()
    >>> layer(np.ones((2, 5, 3), "float32")).shape
    TensorShape([2, 5, 3])
    """

    def __init__(self, *, kl_factor=1e-4, kl_mult=1.0, keep_threshold=0.0, mu_initializer=None,
                 log_sigma2_initializer=None, **kwargs):
        self._init_vib(kl_factor=kl_factor, kl_mult=kl_mult, keep_threshold=keep_threshold,
                       mu_initializer=mu_initializer, log_sigma2_initializer=log_sigma2_initializer)
        super().__init__(**kwargs)
        self.supports_masking = True

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank not in (2, 3) or input_shape[-1] is None:
            raise ValueError(
                f"FeatureMask {self.name!r} expects inputs of shape (batch, features) or "
                f"(batch, time, features) with a known number of features; received "
                f"input_shape={tuple(input_shape.as_list()) if input_shape.rank else input_shape}"
            )
        self.mask = self._add_mask("feature", int(input_shape[-1]), folds=True)
        self._finish_vib_build()
        super().build(input_shape)

    def call(self, inputs, training=None):
        def noisy():
            noise = self.mask.sample(tf.shape(inputs)[0])
            if inputs.shape.rank == 3:
                noise = noise[:, tf.newaxis, :]
            return inputs * noise

        return select(training, noisy, lambda: inputs * self.mask.deterministic())

    def compute_output_shape(self, input_shape):
        return input_shape
