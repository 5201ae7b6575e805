"""Constant and affine inputs folded into the kernel and bias of the layer that reads them.

When `strip_masks` removes channels whose values are constant (a mask's closed gate keeps a
constant, a dead unit's output), the layer reading them loses those kernel rows, and what
they contributed moves into its bias: ``bias += constants @ kernel`` (for a recurrent layer,
its input bias). The converter folds an inference-mode BatchNormalization ``y = a * x + shift``
the same way: ``bias += shift @ kernel``, then each kernel row times its ``a``
(`fold_affine`). A reader without a bias gets one. Folding table: docs/design.md."""

import numpy as np

from tf_vib._keras import keras
from tf_vib.registry import RECURRENT, constant_blocked, recurrent_kind, rule_of

__all__ = ["absorb_constants", "fold_affine", "kernel_indices"]


def kernel_indices(layer):
    """Which of ``layer.get_weights()`` are kernels that read the layer's input."""
    if isinstance(layer, keras.layers.Bidirectional):
        return [0, len(layer.forward_layer.get_weights())]
    return [0]


def _bias_config(config):
    """The dict of ``config`` (a layer's, a TimeDistributed's or an RNN's cell's) that holds
    ``use_bias``."""
    for key in ("layer", "cell"):
        if "use_bias" not in config and isinstance(config.get(key), dict):
            config = config[key]["config"]
    return config


def _new_bias(layer, shift):
    """A bias for a recurrent ``layer`` without one, holding ``shift`` as its input bias (a
    GRU with ``reset_after`` has two rows: input and recurrent)."""
    if recurrent_kind(layer) == "gru" and layer.cell.reset_after:
        return np.stack([shift, np.zeros_like(shift)])
    return shift


def absorb_constants(layer, weights, config, constants):
    """Fold what the removed input channels hold (``constants``, one per input channel)
    into the bias: ``bias += constants @ kernel`` (summed over a Conv's window, exact with
    padding='valid' only). A layer without a bias gets one (in ``config`` too, which must be a
    fresh ``get_config()``). Returns ``(weights, config)``; ``weights`` is a new list."""
    why = constant_blocked(layer)
    if why:
        raise ValueError(f"cannot fold the removed units' constants into {layer.name!r}: {why}")
    weights = list(weights)
    recurrent = rule_of(layer).role == RECURRENT
    for i in kernel_indices(layer):
        kernel = weights[i]
        shift = np.tensordot(np.asarray(constants, np.float64), kernel, axes=([0], [kernel.ndim - 2]))
        shift = shift.reshape(-1, shift.shape[-1]).sum(axis=0)
        at = i + 2 if recurrent else i + 1  # a recurrent layer's bias follows its recurrent kernel
        has_bias = len(weights) > at and (not recurrent or weights[at].shape[-1] == shift.shape[0])
        if has_bias:
            bias = weights[at].astype(np.float64)
            (bias[0] if bias.ndim == 2 else bias)[...] += shift  # a GRU's input bias row
            weights[at] = bias.astype(kernel.dtype)
        elif np.any(shift != 0):  # constant_blocked refuses a Bidirectional without a bias
            _bias_config(config)["use_bias"] = True
            weights.append((_new_bias(layer, shift) if recurrent else shift).astype(kernel.dtype))
    return weights, config


def fold_affine(layer, weights, config, scale, shift):
    """``layer``'s weights and config reading ``scale * x + shift`` (one of each per input
    feature) as the original read ``x``'s affine image: ``shift @ kernel`` into the bias
    (`absorb_constants`), then each kernel row times its ``scale``. Computed in float64."""
    weights, config = absorb_constants(layer, weights, config, shift)
    for i in kernel_indices(layer):
        kernel = np.asarray(weights[i], np.float64)
        shape = [1] * kernel.ndim
        shape[kernel.ndim - 2] = -1
        weights[i] = (kernel * np.reshape(scale, shape)).astype(weights[i].dtype)
    return weights, config
