"""What every VIB layer shares: its mask settings, the KL loss and the config round trip."""

from tf_vib._keras import keras, tf
from tf_vib.layers.vib_mask import GaussianMask, MaskSettings

__all__ = ["VIBLayerMixin", "is_vib_layer"]


class VIBLayerMixin:
    """Adds VIB masks to a Keras layer.

    The concrete layer calls ``_init_vib(**mask_settings)`` before ``super().__init__`` and
    ``_add_mask(...)`` / ``_finish_vib_build()`` in ``build``. The layer's KL terms reach
    the training loss through ``add_loss`` as ``kl_weight * kl_mult * sum(KL)``, where
    ``kl_weight`` is a non-trainable variable that starts at ``kl_factor`` (a schedule
    may ramp it; it is saved with the model).
    """

    def _init_vib(self, **settings):
        self.mask_settings = MaskSettings(**settings)
        self._vib_masks = {}

    def _add_mask(self, name, units, *, folds=True):
        mask = GaussianMask(self, f"{name}_mask", units, self.mask_settings, folds=folds)
        self._vib_masks[name] = mask
        return mask

    def _finish_vib_build(self):
        self.kl_weight = self.add_weight(
            name="kl_weight",
            shape=(),
            initializer=keras.initializers.Constant(self.mask_settings.kl_factor),
            trainable=False,
        )
        self.add_loss(self.weighted_kl)

    @property
    def vib_masks(self):
        """The layer's masks by name (``{"o": GaussianMask, ...}``), once built."""
        return dict(self._vib_masks)

    @property
    def mask_variables(self):
        """The trainable ``mu`` and ``log_sigma2`` variables, for their own learning rate."""
        return [v for mask in self._vib_masks.values() for v in mask.variables]

    def kl(self):
        """Sum of the masks' KL upper bounds (unweighted)."""
        return tf.add_n([mask.kl() for mask in self._vib_masks.values()])

    def weighted_kl(self):
        """``kl_weight * kl_mult * kl()``: the term this layer adds to the loss."""
        return self.kl_weight * self.mask_settings.kl_mult * self.kl()

    def get_config(self):
        return {**super().get_config(), **self.mask_settings.get_config()}


def is_vib_layer(layer):
    """True for a VIB layer, or an ``RNN`` whose cell is one."""
    if isinstance(layer, VIBLayerMixin):
        return True
    cell = getattr(layer, "cell", None)
    return isinstance(cell, VIBLayerMixin)
