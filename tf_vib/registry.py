"""The layer registry: what each Keras layer type may do with pruned units.

One table, consulted before any training (tfmot's ``prune_registry`` plays the same part for
magnitude pruning). Every layer type has one role:

- ``RECURRENT``: LSTM, GRU, SimpleRNN (or ``RNN`` of their cells), and ``Bidirectional`` of
  them: VIB masks on its units, and its input kernel's rows follow pruned input features.
- ``KERNEL``: reads its input through a kernel whose rows can be dropped (Dense, Conv1D,
  ``TimeDistributed(Dense)``); Dense, Conv1D and Embedding can also drop output columns.
- ``CARRIER``: carries each unit on its own, so removed units can be removed from it too.
  ``linear`` carriers commute with any per-unit scale (a mask mean folded further on);
  the others (elementwise activations, max pooling, BatchNormalization) need the units
  unscaled, so the masks upstream of them are hard (``1[kept]``) at inference.
- ``BREAKER``: mixes units (LayerNormalization, softmax, Flatten, attention) or is unknown:
  the units that reach it keep their width.

Tests: ``tests/test_registry.py`` has one per role.
"""

import dataclasses

import numpy as np

from tf_vib._keras import keras

__all__ = ["RECURRENT", "KERNEL", "CARRIER", "BREAKER", "Rule", "rule_of", "recurrent_kind",
           "ELEMENTWISE_ACTIVATIONS", "COLUMN_PRODUCERS", "activation_values"]

RECURRENT, KERNEL, CARRIER, BREAKER = "recurrent", "kernel", "carrier", "breaker"

L = keras.layers

#: Activations applied to each unit on its own (softmax and log_softmax mix units).
ELEMENTWISE_ACTIVATIONS = frozenset({
    "linear", "relu", "relu6", "tanh", "sigmoid", "hard_sigmoid", "elu", "selu", "softplus",
    "softsign", "swish", "silu", "gelu", "exponential", "mish", "leaky_relu",
})


@dataclasses.dataclass(frozen=True)
class Rule:
    role: str
    #: Carriers: commutes with a per-unit scale (``f(s * x) == s * f(x)``).
    linear: bool = False
    #: Why the units stop here (breakers), for the report.
    reason: str = ""


_KERNEL_TYPES = (L.Dense, L.Conv1D)
#: Layers whose output columns stripping can drop when every reader prunes them.
COLUMN_PRODUCERS = (L.Dense, L.Conv1D, L.Embedding)
_IDENTITY_AT_INFERENCE = (L.Dropout, L.SpatialDropout1D, L.GaussianNoise, L.GaussianDropout, L.AlphaDropout,
                          L.ActivityRegularization)
_LINEAR_POOLING = (L.GlobalAveragePooling1D, L.AveragePooling1D)
_MAX_POOLING = (L.GlobalMaxPooling1D, L.MaxPooling1D)
_ACTIVATION_LAYERS = (L.ReLU, L.LeakyReLU, L.ELU)


#: TFLite's float kernels work on 4 floats at a time, so a fused LSTM whose units are a
#: multiple of this runs faster than one a unit or more above it (docs/deployment.md).
#: compress() trims its chosen LSTMs to it when accuracy allows (``UNIT_MULTIPLE``), and the
#: converter pads the rest with zero units to it in the float modes (``AUTO_UNIT_MULTIPLE``).
FUSED_LSTM_UNIT_MULTIPLE = 4


def recurrent_kind(layer):
    """``"lstm"``, ``"gru"``, ``"simple_rnn"`` or None, for the plain Keras recurrent layers."""
    kinds = {L.LSTM: "lstm", L.GRU: "gru", L.SimpleRNN: "simple_rnn"}
    if type(layer) in kinds:
        return kinds[type(layer)]
    if type(layer) is L.RNN:
        return {L.LSTMCell: "lstm", L.GRUCell: "gru", L.SimpleRNNCell: "simple_rnn"}.get(type(layer.cell))
    return None


def activation_name(activation):
    return getattr(activation, "__name__", str(activation))


def rule_of(layer):
    """The registry's rule for ``layer`` (an instance)."""
    if recurrent_kind(layer):
        return Rule(RECURRENT)
    if isinstance(layer, L.Bidirectional) and recurrent_kind(layer.forward_layer):
        return Rule(RECURRENT)
    if type(layer) in _KERNEL_TYPES:
        return Rule(KERNEL)
    if isinstance(layer, L.TimeDistributed):
        inner = rule_of(layer.layer)
        if inner.role == KERNEL and isinstance(layer.layer, L.Dense):
            return inner
        if inner.role == CARRIER and not isinstance(layer.layer, L.BatchNormalization):
            return inner
        return Rule(BREAKER, reason=f"TimeDistributed({type(layer.layer).__name__}) mixes units")
    if isinstance(layer, _IDENTITY_AT_INFERENCE) or isinstance(layer, _LINEAR_POOLING):
        return Rule(CARRIER, linear=True)
    if isinstance(layer, L.Masking):
        if layer.mask_value == 0:
            return Rule(CARRIER, linear=True)
        return Rule(BREAKER, reason=f"Masking(mask_value={layer.mask_value}) reads every unit")
    if isinstance(layer, L.Activation):
        name = activation_name(layer.activation)
        if name == "linear":
            return Rule(CARRIER, linear=True)
        if name in ELEMENTWISE_ACTIVATIONS:
            return Rule(CARRIER)
        return Rule(BREAKER, reason=f"activation {name!r} mixes units")
    if isinstance(layer, _ACTIVATION_LAYERS) or isinstance(layer, _MAX_POOLING):
        return Rule(CARRIER)
    if isinstance(layer, L.BatchNormalization) and _last_axis(layer):
        return Rule(CARRIER)
    if isinstance(layer, L.Concatenate) and layer.axis == -1:
        return Rule(CARRIER, linear=True)
    return Rule(BREAKER, reason=f"{type(layer).__name__} is not known to keep units apart")


def _last_axis(layer):
    axis = list(layer.axis) if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    if len(axis) != 1:
        return False
    ndim = layer.input_spec.ndim if getattr(layer, "input_spec", None) is not None else None
    return axis[0] == -1 or (ndim is not None and axis[0] == ndim - 1)


def activation_values(layer, values):
    """What an elementwise carrier (activation layer) makes of constant unit values."""
    values = np.asarray(values, dtype=np.float32)[None, :]
    if isinstance(layer, L.Activation):
        return np.asarray(layer.activation(values)).reshape(-1)
    return np.asarray(layer(values)).reshape(-1)
