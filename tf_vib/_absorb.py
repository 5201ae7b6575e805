"""Removed input channels that hold constants, folded into the layer that reads them.

When `strip_masks` removes channels whose values are constant (a mask's closed gate keeps a
constant, a dead unit's output), the layer reading them loses those kernel rows, and what
they contributed moves into its bias: ``bias += constants @ kernel`` (for a recurrent layer,
its input bias). Folding table: docs/design.md."""

import numpy as np

from tf_vib._keras import keras
from tf_vib.registry import RECURRENT, constant_blocked, rule_of

__all__ = ["absorb_constants", "kernel_indices"]


def kernel_indices(layer):
    """Which of ``layer.get_weights()`` are kernels that read the layer's input."""
    if isinstance(layer, keras.layers.Bidirectional):
        return [0, len(layer.forward_layer.get_weights())]
    return [0]


def absorb_constants(layer, weights, config, constants):
    """Fold what the removed input channels hold (``constants``, one per input channel)
    into the bias: ``bias += constants @ kernel`` (summed over a Conv's window, exact with
    padding='valid' only). A Dense or Conv without a bias gets one."""
    why = constant_blocked(layer)
    if why:
        raise ValueError(f"strip_masks cannot fold the removed units' constants into {layer.name!r}: {why}")
    weights = list(weights)
    recurrent = rule_of(layer).role == RECURRENT
    for i in kernel_indices(layer):
        kernel = weights[i]
        shift = np.tensordot(constants, kernel, axes=([0], [kernel.ndim - 2]))
        shift = shift.reshape(-1, shift.shape[-1]).sum(axis=0)
        if recurrent:
            if len(weights) <= i + 2 or weights[i + 2].shape[-1] != shift.shape[0]:
                raise ValueError(f"layer {layer.name!r} needs a bias to absorb removed constant inputs")
            bias = weights[i + 2].astype(np.float64)
            (bias[0] if bias.ndim == 2 else bias)[...] += shift  # a GRU's input bias row
            weights[i + 2] = bias.astype(kernel.dtype)
        elif len(weights) > 1:
            weights[1] = (weights[1] + shift).astype(kernel.dtype)
        else:
            inner = config["layer"]["config"] if isinstance(layer, keras.layers.TimeDistributed) else config
            inner["use_bias"] = True  # get_config() gave a fresh dict
            weights.append(shift.astype(kernel.dtype))
    return weights, config
