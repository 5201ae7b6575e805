"""An inference-mode BatchNormalization folded into the kernel and bias of the layer that reads it.

At inference a BatchNormalization on the feature axis is an affine map of each feature,
``y = a * x + shift`` with ``a = gamma / sqrt(moving_variance + epsilon)`` and
``shift = beta - moving_mean * a``. A layer that reads ``y`` through a kernel ``W`` (one row
per input feature) and a bias ``b`` computes the same from ``x`` with ``W' = a[:, None] * W``
and ``b' = b + shift @ W``: an LSTM, GRU or SimpleRNN (its input kernel; a GRU's input bias
row), a Bidirectional one (both directions), a Dense, a Conv1D with ``padding="valid"`` (summed over its taps), and a Dense or
Conv1D inside ``TimeDistributed``. A reader without a bias gets one.

Why fold: the converter would otherwise write the normalization as a MUL and an ADD. In
full int8, those ops requantize the rounding of the layer before them multiplied by
``1 / std``, so a trained ``LSTM(return_sequences) -> BatchNormalization -> LSTM`` misses
the int8 target unfolded and meets it folded (measured in docs/deployment.md). In float the fold is
exact to float rounding (the folded weights are computed in float64).

The fold moves the normalization's rounding into the reader's weights: ``W * a`` is rounded
to int8 per output column, so a row whose ``a`` is small next to the largest is rounded
``max(a) / a`` times more coarsely, and the reader now sees the BatchNormalization's input
``x`` instead of the normalized ``y``, whose root mean square over its standard deviation,
``sqrt(1 + (moving_mean / std)^2)``, grows the weights' rounding error again (and makes
``W' x + b'`` a difference of large numbers). Their product, largest over the features, is
the *rounding growth*; a BatchNormalization whose growth exceeds `FOLD_MAX_ROUNDING_GROWTH`
stays. Measured (docs/deployment.md): the trained ``LSTM -> BatchNormalization -> LSTM``s,
2.4 and 2.5, pass int8 only folded; a sensor front end ``Input -> BatchNormalization -> LSTM``
whose features have offsets (a mean 20 standard deviations from 0) folded fell from 91% to 55%
same class in int8 and failed float16 (0.061 against 0.009): it stays.

A BatchNormalization also stays when the fold would not be exact or is not known to be: its
output feeds several layers or is a model output, its axis is not the last, a Keras mask
flows through it, it is called with ``training=True``, it or its reader is shared, its
reader is another kind of layer (or a Conv1D with zero padding, groups or channels first).
Nothing is refused because of it: each BatchNormalization gets a `LayerPlan` saying which.
"""

import dataclasses

import numpy as np

from converters.plan._common import SKIP, LayerPlan, clone_with, has_input_mask, one_kernel_consumer
from tf_vib._absorb import fold_affine
from tf_vib._graph import call_counts, graph_nodes, tensor_users
from tf_vib._keras import keras
from tf_vib.registry import constant_blocked, inner_layer, recurrent_kind

__all__ = ["BatchNormPlan", "FOLD_MAX_ROUNDING_GROWTH", "rounding_growth", "fold_batch_norms",
           "batch_norm_records"]

L = keras.layers

#: A BatchNormalization folds when its rounding growth (`rounding_growth`) is at most this.
FOLD_MAX_ROUNDING_GROWTH = 4.0


@dataclasses.dataclass
class BatchNormPlan(LayerPlan):
    """What one BatchNormalization becomes: ``folded_into`` the reader's name, or None (kept)."""

    folded_into: str | None = None


def _label(layer):
    inner = inner_layer(layer)
    return type(inner).__name__ if inner is layer else f"TimeDistributed({type(inner).__name__})"


def _is_batch_norm(layer):
    return isinstance(inner_layer(layer), L.BatchNormalization)


def _reader(layer):
    """True for the layers a BatchNormalization folds into (their kernel's axis -2 is the
    input features, their bias last)."""
    if recurrent_kind(layer) or (isinstance(layer, L.Bidirectional) and recurrent_kind(layer.forward_layer)):
        return True
    inner = inner_layer(layer)
    return type(inner) in (L.Dense, L.Conv1D)


def _folded_weights(reader):
    if isinstance(reader, L.Bidirectional):
        return "both directions' input kernels and biases"
    return "its input kernel and bias" if recurrent_kind(reader) else "its kernel and bias"


def _why_not(node, users, model, calls):
    """Why the BatchNormalization of ``node`` cannot fold into its reader, or None."""
    layer, inner = node.layer, inner_layer(node.layer)
    rank = len(node.keras_inputs[0].shape) - (inner is not layer)  # the inner layer's input rank
    axes = inner.axis if isinstance(inner.axis, (list, tuple)) else [inner.axis]
    if len(axes) != 1 or axes[0] not in (-1, rank - 1):
        return f"it normalizes axis {list(axes)}, not the last (feature) axis"
    if node.call_kwargs.get("training"):
        return "it is called with training=True (batch statistics)"
    if len(node.call_args) > 1:
        return "it is called with positional arguments besides its input"
    if has_input_mask(node):
        return "a Keras mask flows through it"
    why = one_kernel_consumer(node, users, model, calls, accepts=_reader)
    if why is not None:
        return why
    reader = inner_layer(users[0].layer)
    if isinstance(reader, L.Conv1D):
        if reader.padding != "valid":
            return (f"{reader.name!r} is a Conv1D with padding={reader.padding!r}: its zero padding "
                    "would stand for normalized zeros")
        if reader.groups != 1 or reader.data_format != "channels_last":
            return f"{reader.name!r} is a Conv1D with groups or channels first"
    return constant_blocked(reader) or None


def _affine(inner):
    """``(a, shift)`` of the BatchNormalization at inference, in float64."""
    variance = np.asarray(inner.moving_variance, np.float64)
    a = 1.0 / np.sqrt(variance + inner.epsilon)
    if inner.gamma is not None:
        a = a * np.asarray(inner.gamma, np.float64)
    shift = -np.asarray(inner.moving_mean, np.float64) * a
    if inner.beta is not None:
        shift = shift + np.asarray(inner.beta, np.float64)
    return a, shift


def rounding_growth(layer):
    """``(growth, feature)``: how much more coarsely the reader's int8 weights round, relative
    to the signal, once ``layer`` (a BatchNormalization, or a TimeDistributed one) is folded into
    them (the module's docstring), largest over the features, and the feature where it is."""
    inner = inner_layer(layer)
    a, _ = _affine(inner)
    spread = np.abs(np.asarray(inner.moving_mean, np.float64)) / np.sqrt(
        np.asarray(inner.moving_variance, np.float64) + inner.epsilon)
    with np.errstate(divide="ignore", invalid="ignore"):
        growth = np.abs(a).max() / np.abs(a) * np.sqrt(1.0 + spread ** 2)
    growth = np.where(np.isfinite(growth), growth, np.inf)
    feature = int(np.argmax(growth))
    return float(growth[feature]), feature


def _folded(reader, a, shift):
    """A new, unbuilt copy of ``reader`` with the folded weights in ``_tf_vib_weights``."""
    weights, config = fold_affine(reader, reader.get_weights(), reader.get_config(), a, shift)
    copy = type(reader).from_config(config)
    copy._tf_vib_weights = weights
    return copy


def fold_batch_norms(model, max_rounding_growth=FOLD_MAX_ROUNDING_GROWTH):
    """The model with each foldable BatchNormalization folded into the layer that reads it.

    Args:
      model: a plain tf_keras model; it is not modified.
      max_rounding_growth: a BatchNormalization whose `rounding_growth` exceeds it stays;
        None: no bound (the float fold is exact whatever the growth).

    Returns:
      ``(model, [LayerPlan])``: the model (the same object if nothing was folded) and one plan
      per BatchNormalization (or ``TimeDistributed`` of one) saying whether it was folded, into
      which layer, or why not.
    """
    users = tensor_users(model)
    calls = call_counts(model)
    plans, replacements = [], {}
    for node in graph_nodes(model):
        if not _is_batch_norm(node.layer):
            continue
        layer = node.layer
        consumers = users.get(id(node.outputs), [])
        why = _why_not(node, consumers, model, calls)
        if why is None and max_rounding_growth is not None:
            growth, feature = rounding_growth(layer)
            if growth > max_rounding_growth:
                why = (f"folded, the int8 weights of {consumers[0].layer.name!r} would round {growth:.3g}x "
                       f"more coarsely at feature {feature}, above {max_rounding_growth:g}: an input mean far "
                       "from 0 or scales far apart")
        if why is not None:
            plans.append(BatchNormPlan(layer.name, _label(layer), f"kept ({why})"))
            continue
        reader = consumers[0].layer
        replacements[id(layer)] = SKIP
        replacements[id(reader)] = _folded(reader, *_affine(inner_layer(layer)))
        plans.append(BatchNormPlan(layer.name, _label(layer), f"folded into {reader.name!r} "
                                                              f"({_label(reader)}: {_folded_weights(reader)})", reader.name))
    return (clone_with(model, replacements) if replacements else model), plans


def batch_norm_records(plans):
    """The file's ``tf_vib["batch_normalization"]`` entries, ``{"layer", "folded_into", "why"}``
    per `BatchNormPlan` of ``plans`` (``folded_into`` None where it stayed)."""
    return [{"layer": p.name, "folded_into": p.folded_into, "why": p.becomes}
            for p in plans if isinstance(p, BatchNormPlan)]
