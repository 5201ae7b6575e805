"""Carriers (`tf_vib.registry`) take a channel record through: pooling, dropout,
activations, BatchNormalization (its four vectors sliced), DepthwiseConv2D (its kernel and
bias sliced), a Reshape of size-1 axes (its target width changed), elementwise merges
(inputs alike), Concatenate (records joined).

A removed unit's constant (``Channels.offset``) goes through too: BatchNormalization and the
activations map it, pooling, dropout and reshapes keep it; `tf_vib.registry.constant_blocked`
lists the carriers that cannot, and ``mask_plan`` keeps the units before those."""

import numpy as np

from tf_vib._graph import copy_layer
from tf_vib._kept import Channels
from tf_vib._keras import keras
from tf_vib.registry import (
    MAX_POOLING,
    activation_values,
    constant_blocked,
    inner_layer,
    rule_of,
    shifts_zero,
)

__all__ = ["carry"]


def carry(call, inputs):
    """A carrier (`tf_vib.registry`) takes the record through."""
    layer, node = call.layer, call.node
    if isinstance(layer, keras.layers.Concatenate):
        return None, _concatenated(node, inputs)
    channels = _alike(layer, inputs) if len(inputs) > 1 else inputs[0]
    rule = rule_of(layer)
    inner = inner_layer(layer)
    if channels.shifted() or (shifts_zero(layer) and channels.held()):
        why = constant_blocked(layer)
        if why:
            raise ValueError(f"strip_masks cannot carry removed units that hold a constant through layer "
                             f"{layer.name!r}: {why} (mask_plan keeps the units before it)")
    if isinstance(inner, keras.layers.BatchNormalization):
        return _batch_norm(call, channels)
    if isinstance(inner, (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU,
                          keras.layers.Rescaling)):
        channels = channels.with_offset(_mapped(channels.offsets(), lambda v: activation_values(inner, v)))
    if isinstance(inner, keras.layers.DepthwiseConv2D):
        return _depthwise(call, channels)
    if isinstance(inner, keras.layers.Reshape) and len(channels.physical) != channels.total:
        return _reshape(call, channels)
    if not rule.linear:
        positive = isinstance(inner, MAX_POOLING)
        ok_scale = np.all(channels.scale > 0) if positive else np.all(channels.scale == 1.0)
        zero_stays = positive or channels.live.all() or np.all(activation_values(inner, [0.0]) == 0)
        if not (ok_scale and zero_stays):
            raise ValueError(
                f"strip_masks cannot carry rescaled units through layer {layer.name!r} "
                f"({type(layer).__name__}): the masks before it must be hard at inference "
                "(add_vib_masks makes them so)"
            )
    return None, channels


def _mapped(offset, function):
    """``function`` of the finite offsets (NaN marks unused channels and stays NaN)."""
    finite = np.isfinite(offset)
    out = offset.copy()
    if finite.any():
        out[finite] = function(offset[finite])
    return out


def _alike(layer, inputs):
    """An elementwise merge needs every input's channels alike (one record), and no
    constants (mask_plan follows removed units only through one-input carriers)."""
    first = inputs[0]
    for other in inputs[1:]:
        same = (first is not None and other is not None and first.total == other.total
                and np.array_equal(first.physical, other.physical) and np.array_equal(first.scale, other.scale)
                and np.array_equal(first.live, other.live) and not first.shifted() and not other.shifted())
        if not same:
            raise ValueError(
                f"strip_masks cannot carry units through layer {layer.name!r} ({type(layer).__name__}): "
                f"its inputs keep different channels, and an {type(layer).__name__} merges them unit by unit"
            )
    return first


def _depthwise(call, channels):
    """Slice a depthwise kernel (one filter per channel) and its bias; a unit's scale folds
    into its filter. A present-but-pruned unit would become the bias, not 0: refused."""
    layer = call.layer
    if not channels.live.all():
        raise ValueError(f"strip_masks cannot carry pruned-but-present units through {layer.name!r}: "
                         "DepthwiseConv2D maps a zero unit to its bias")
    weights = layer.get_weights()
    kernel = np.take(weights[0], channels.physical, axis=2) * channels.scale[None, None, :, None]
    new_layer = copy_layer(layer)
    output = call.call(new_layer)
    new_layer.set_weights([kernel.astype(np.float32)] + [w[channels.physical] for w in weights[1:]])
    return output, Channels.subset(channels.physical, channels.total).with_offset(channels.offset)


def _reshape(call, channels):
    layer = call.layer
    config = layer.get_config()
    inner = config["layer"]["config"] if isinstance(layer, keras.layers.TimeDistributed) else config
    inner["target_shape"] = (*tuple(inner["target_shape"])[:-1], len(channels.physical))
    output = call.call(type(layer).from_config(config))
    return output, channels


def _concatenated(node, inputs):
    if any(c is None for c in inputs):
        raise ValueError(f"strip_masks cannot carry units through {node.layer.name!r}: an input's "
                         "feature axis is unknown")
    starts = np.cumsum([0] + [c.total for c in inputs])
    return Channels(np.concatenate([c.physical + o for c, o in zip(inputs, starts[:-1], strict=True)]),
                    np.concatenate([c.scale for c in inputs]), np.concatenate([c.live for c in inputs]),
                    int(starts[-1]), np.concatenate([c.offsets() for c in inputs]))

def _batch_norm(call, channels):
    """Slice BatchNormalization's four vectors; a unit's scale folds into gamma and the mean."""
    layer = call.layer
    if not channels.live.all():
        raise ValueError(f"strip_masks cannot carry pruned-but-present units through {layer.name!r}: "
                         "BatchNormalization maps a zero unit to a constant")
    names = [w.name.split("/")[-1].split(":")[0] for w in layer.weights]
    full = dict(zip(names, layer.get_weights(), strict=True))
    weights = {n: w[channels.physical] for n, w in full.items()}
    offset = _normalized(inner_layer(layer), full, channels.offsets())
    scale = channels.scale
    if np.any(scale != 1.0):
        if "gamma" not in weights:
            raise ValueError(f"BatchNormalization {layer.name!r} has scale=False: a unit's scale cannot fold")
        weights["gamma"] = weights["gamma"] * scale
        weights["moving_mean"] = weights["moving_mean"] / scale
    new_layer = type(layer).from_config(layer.get_config())
    output = call.call(new_layer)
    new_layer.set_weights([weights[n].astype(np.float32) for n in names])
    return output, Channels.subset(channels.physical, channels.total).with_offset(offset)


def _normalized(layer, weights, values):
    """BatchNormalization at inference of one constant per channel (NaN stays NaN)."""
    gamma = weights.get("gamma", np.ones_like(values))
    beta = weights.get("beta", np.zeros_like(values))
    mean, variance = weights["moving_mean"], weights["moving_variance"]
    return (gamma.astype(np.float64) * (values - mean) / np.sqrt(variance.astype(np.float64) + layer.epsilon)
            + beta)
