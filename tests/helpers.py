"""Shared test helpers: small models and masks set to chosen values."""

import numpy as np

import tf_vib
from tf_vib._keras import keras
from tf_vib.compress._schedules import vib_layers


def vib_masks(model):
    """Every GaussianMask of a model (Bidirectional and nested layers included), as
    (owner name, gate, mask)."""
    for owner in vib_layers(model):
        for gate, mask in owner.vib_masks.items():
            yield owner.name, gate, mask


def set_mask(mask, mu, log_sigma2):
    mask.mu.assign(np.broadcast_to(np.asarray(mu, "float32"), (mask.units,)))
    mask.log_sigma2.assign(np.broadcast_to(np.asarray(log_sigma2, "float32"), (mask.units,)))


def randomize_masks(model, rng, prune_fraction=0.4):
    """Means in +-[0.3, 2] and a random share of units pushed far above log_alpha 0.

    One unit of each layer is kept by every one of its masks, so that no layer loses all
    its units (stripping is exact only where it removes what the masks prune).
    """
    keep = {}
    for owner, _, mask in vib_masks(model):
        units = mask.units
        mu = rng.uniform(0.3, 2.0, units) * rng.choice([-1.0, 1.0], units)
        pruned = rng.random(units) < prune_fraction
        pruned[keep.setdefault(owner, int(rng.integers(units)))] = False
        log_sigma2 = np.where(pruned, 6.0, -6.0) + rng.normal(0.0, 0.1, units)
        set_mask(mask, mu, log_sigma2)


def prune_partly(model, rng):
    """`randomize_masks`, then one more pruned unit in every mask of >= 2 units that kept all,
    so that every mask removes something and none removes everything."""
    randomize_masks(model, rng)
    for _, _, mask in vib_masks(model):
        kept = np.asarray(mask.log_alpha()) < mask.settings.keep_threshold
        if mask.units > 1 and kept.all():
            log_sigma2 = mask.log_sigma2.numpy()
            log_sigma2[rng.integers(mask.units)] = 6.0
            set_mask(mask, mask.mu.numpy(), log_sigma2)


def cell_factory(kind):
    return {
        "lstm": lambda units, **kw: tf_vib.layers.VIBLSTMCell(units, **kw),
        "gru": lambda units, **kw: tf_vib.layers.VIBGRUCell(units, **kw),
        "gru_v1": lambda units, **kw: tf_vib.layers.VIBGRUCell(units, reset_after=False, **kw),
    }[kind]


def max_abs_diff(a, b, x):
    return float(np.max(np.abs(a.predict(x, verbose=0) - b.predict(x, verbose=0))))


def all_weights(model):
    return [w.copy() for w in model.get_weights()]


def keras_rnn(kind):
    return keras.layers.LSTMCell if kind == "lstm" else keras.layers.GRUCell


#: A ``sitecustomize.py`` that makes TensorFlow, Keras, tf-vib and converters unimportable: a
#: script run with it in its path sees what a device with NumPy and a TFLite runtime has.
DEVICE_ONLY = '''
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"tensorflow", "tf_keras", "keras", "tf_vib", "converters"}:
            raise ImportError(f"{name} is not on the device")
sys.meta_path.insert(0, Block())
'''
