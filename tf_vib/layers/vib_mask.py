"""The Gaussian VIB mask, written once and used by every VIB layer.

A mask over ``r`` units multiplies a vector ``h`` (Dai et al., ICML 2018, eq. 5-7):

    z = h * (mu + sigma * eps),  eps ~ N(0, I)    while training
    z = h * deterministic(mu)                      at inference

with trainable ``mu`` and ``log_sigma2`` of size ``r``. Its KL penalty is the
variational upper bound ``KL = 0.5 * sum_j log(1 + mu_j^2 / sigma_j^2)``, and unit ``j``
is kept while ``log_alpha_j = log_sigma2_j - log(mu_j^2 + 1e-8)`` stays below the
keep threshold.
"""

import numpy as np

from tf_vib._checks import check_number
from tf_vib._keras import keras, tf

__all__ = [
    "GaussianMask",
    "MaskSettings",
    "DEFAULT_MU_INITIALIZER",
    "DEFAULT_LOG_SIGMA2_INITIALIZER",
]

#: Reference initialisation of the VIB paper: mu ~ N(1, 0.01), log_sigma2 ~ N(-9, 0.01).
DEFAULT_MU_INITIALIZER = {"class_name": "RandomNormal", "config": {"mean": 1.0, "stddev": 0.01}}
DEFAULT_LOG_SIGMA2_INITIALIZER = {
    "class_name": "RandomNormal",
    "config": {"mean": -9.0, "stddev": 0.01},
}
_EPS = 1e-8


class MaskSettings:
    """The keyword arguments every VIB layer accepts for its masks, validated once.

    Args:
      kl_factor: float, default 1e-4. Weight of this layer's KL terms in the loss
        (``loss = cross_entropy + kl_factor * sum(kl_mult * KL)``). Stored in a
        non-trainable variable ``kl_weight`` so a schedule can ramp it during training.
      kl_mult: float, default 1.0. Extra multiplier for this layer's masks, so input and
        hidden masks can be weighted differently.
      keep_threshold: float, default 0.0. A unit is kept while ``log_alpha < keep_threshold``;
        this decides the deterministic (inference) mask and what ``strip_masks`` removes.
      mu_initializer, log_sigma2_initializer: Keras initializers, default N(1, 0.01) and
        N(-9, 0.01) (the paper's).
    """

    def __init__(
        self,
        kl_factor=1e-4,
        kl_mult=1.0,
        keep_threshold=0.0,
        mu_initializer=None,
        log_sigma2_initializer=None,
    ):
        self.kl_factor = check_number("kl_factor", kl_factor, minimum=0.0)
        self.kl_mult = check_number("kl_mult", kl_mult, minimum=0.0)
        self.keep_threshold = check_number("keep_threshold", keep_threshold)
        self.mu_initializer = keras.initializers.get(
            DEFAULT_MU_INITIALIZER if mu_initializer is None else mu_initializer
        )
        self.log_sigma2_initializer = keras.initializers.get(
            DEFAULT_LOG_SIGMA2_INITIALIZER
            if log_sigma2_initializer is None
            else log_sigma2_initializer
        )

    def get_config(self):
        return {
            "kl_factor": self.kl_factor,
            "kl_mult": self.kl_mult,
            "keep_threshold": self.keep_threshold,
            "mu_initializer": keras.initializers.serialize(self.mu_initializer),
            "log_sigma2_initializer": keras.initializers.serialize(self.log_sigma2_initializer),
        }


class GaussianMask:
    """One VIB mask: the variables ``{name}_mu`` and ``{name}_log_sigma2`` of a host layer.

    It is not a layer of its own: the host layer owns the variables (so their names,
    saving and tfmot wrapping stay those of the host), and this object holds the maths.

    Args:
      host: the layer that owns the variables (called from its ``build``).
      name: prefix of the variable names, e.g. ``"o_mask"``.
      units: size of the masked vector.
      settings: a ``MaskSettings``.
      folds: whether the mask folds exactly into a plain layer for any value. The
        deterministic mask is then ``mu * 1[kept]``; for a mask that has no exact fold
        it is the hard ``1[kept]`` (see ``deterministic``).
    """

    def __init__(self, host, name, units, settings, *, folds=True):
        self.name = name
        self.units = int(units)
        self.settings = settings
        self.folds = bool(folds)
        self.mu = host.add_weight(
            name=f"{name}_mu",
            shape=(self.units,),
            initializer=_fresh(settings.mu_initializer),
            trainable=True,
        )
        self.log_sigma2 = host.add_weight(
            name=f"{name}_log_sigma2",
            shape=(self.units,),
            initializer=_fresh(settings.log_sigma2_initializer),
            trainable=True,
        )

    @property
    def variables(self):
        return [self.mu, self.log_sigma2]

    def log_alpha(self):
        """``log_sigma2 - log(mu^2 + 1e-8)``: large means the unit is noise."""
        return self.log_sigma2 - tf.math.log(tf.square(self.mu) + _EPS)

    def kl(self):
        """``0.5 * sum log(1 + mu^2 / sigma^2)``, the mask's KL upper bound (a scalar)."""
        return 0.5 * tf.reduce_sum(tf.math.log1p(tf.square(self.mu) * tf.exp(-self.log_sigma2)))

    def kept_tensor(self, threshold=None):
        threshold = self.settings.keep_threshold if threshold is None else threshold
        return self.log_alpha() < threshold

    def kept(self, threshold=None):
        """A NumPy boolean vector: which units survive at ``threshold`` (default: the layer's)."""
        return np.asarray(self.kept_tensor(threshold))

    def deterministic(self, threshold=None):
        """The inference value: ``mu * 1[kept]`` if the mask folds, else ``1[kept]``.

        A mask that multiplies a gate whose scaling has no plain-layer equivalent
        (an LSTM's input, forget and candidate gates; a GRU's update gate) is evaluated
        as the hard binary mask, as in the paper's released code, so that the masked
        model's inference equals the stripped plain model exactly.
        """
        kept = tf.cast(self.kept_tensor(threshold), self.mu.dtype)
        return self.mu * kept if self.folds else kept

    def sample(self, batch_size):
        """``mu + sigma * eps`` with one draw per row of the batch: shape (batch, units)."""
        eps = tf.random.normal((batch_size, self.units), dtype=self.mu.dtype)
        return self.mu + tf.exp(0.5 * self.log_sigma2) * eps


def _fresh(initializer):
    # An unseeded Keras initializer returns the same values at every call: give each mask
    # its own instance so that masks are not identical copies of each other.
    return keras.initializers.deserialize(keras.initializers.serialize(initializer))


def in_training(training):
    """Resolve Keras's ``training`` argument to a Python bool or a boolean tensor."""
    if training is None:
        return False
    if isinstance(training, (bool, int, np.bool_)):
        return bool(training)
    return training


def select(training, train_fn, infer_fn):
    """``train_fn()`` while training, ``infer_fn()`` otherwise; a ``tf.cond`` for tensors."""
    training = in_training(training)
    if isinstance(training, bool):
        return train_fn() if training else infer_fn()
    return tf.cond(tf.cast(training, tf.bool), train_fn, infer_fn)
