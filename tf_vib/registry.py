"""The layer registry: what each Keras layer type may do with pruned units.

One table, consulted before any training (tfmot's ``prune_registry`` plays the same part for
magnitude pruning). Every layer type has one role:

- ``RECURRENT``: LSTM, GRU, SimpleRNN (or ``RNN`` of their cells), and ``Bidirectional`` of
  them: VIB masks on its units, and its input kernel's rows follow pruned input features.
- ``KERNEL``: reads its input through a kernel whose rows can be dropped (Dense, Conv1D,
  Conv2D, ``TimeDistributed`` of them); Dense, Conv1D and Embedding can also drop output
  columns, and so can Conv2D and ``TimeDistributed`` producers in front of a FeatureMask
  (``CHANNEL_PRODUCERS``, `tf_vib._channels`).
- ``CARRIER``: carries each unit on its own, so removed units can be removed from it too.
  ``linear`` carriers commute with any per-unit scale (a mask mean folded further on);
  the others (elementwise activations, max pooling, BatchNormalization) need the units
  unscaled, so the masks upstream of them are hard (``1[kept]``) at inference. A CNN's
  per-channel layers are carriers too: 2D pooling and padding, Rescaling, DepthwiseConv2D
  (``depth_multiplier=1``: its kernel and bias are sliced), a Reshape that only adds or
  drops size-1 axes, the elementwise merges (Add, Multiply... of tensors of one width) and
  the TFOpLambda nodes of elementwise ops with scalar constants (hard-swish's ``x + 3``).
  A carrier may map a removed unit's 0 to a constant (``shifts_zero``: BatchNormalization,
  an activation with ``f(0) != 0``); the layer that reads the units then absorbs those
  constants into its bias (``constant_blocked`` says where that cannot be exact, and
  ``mask_plan`` keeps the units there).
- ``BREAKER``: mixes units (LayerNormalization, softmax, Flatten, attention) or is unknown:
  the units that reach it keep their width.

Tests: ``tests/test_registry.py`` has one per role.
"""

import dataclasses

import numpy as np

from tf_vib._keras import keras, tf

__all__ = ["RECURRENT", "KERNEL", "CARRIER", "BREAKER", "Rule", "rule_of", "recurrent_kind",
           "ELEMENTWISE_ACTIVATIONS", "COLUMN_PRODUCERS", "CHANNEL_PRODUCERS", "ELEMENTWISE_MERGES",
           "activation_values", "inner_layer", "zero_preserving", "shifts_zero", "constant_blocked"]

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


_KERNEL_TYPES = (L.Dense, L.Conv1D, L.Conv2D)
#: Layers whose output columns stripping can drop when every reader prunes them.
COLUMN_PRODUCERS = (L.Dense, L.Conv1D, L.Embedding)
#: The same, for the channel groups of `tf_vib._channels` (a CNN's last convolution too).
CHANNEL_PRODUCERS = (L.Dense, L.Conv1D, L.Conv2D, L.Embedding)
_IDENTITY_AT_INFERENCE = (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.GaussianNoise, L.GaussianDropout,
                          L.AlphaDropout, L.ActivityRegularization)
_LINEAR_POOLING = (L.GlobalAveragePooling1D, L.AveragePooling1D, L.GlobalAveragePooling2D, L.AveragePooling2D,
                   L.ZeroPadding1D, L.ZeroPadding2D, L.Cropping1D, L.Cropping2D)
MAX_POOLING = (L.GlobalMaxPooling1D, L.MaxPooling1D, L.GlobalMaxPooling2D, L.MaxPooling2D)
_ACTIVATION_LAYERS = (L.ReLU, L.LeakyReLU, L.ELU)
#: Merges of same-shaped tensors, unit by unit (Concatenate is a carrier of its own kind).
ELEMENTWISE_MERGES = (L.Add, L.Subtract, L.Average, L.Multiply, L.Maximum, L.Minimum)
#: TFOpLambda functions that act on each unit on its own (with scalar constants), and
#: whether they commute with a per-unit scale.
_ELEMENTWISE_OPS = {
    "__operators__.add": False, "math.add": False, "math.subtract": False, "__operators__.sub": False,
    "math.multiply": True, "math.truediv": True, "math.divide": True,
    "nn.relu": False, "nn.relu6": False, "math.sigmoid": False, "nn.sigmoid": False, "math.tanh": False,
    "nn.silu": False, "nn.swish": False, "math.maximum": False, "math.minimum": False,
}


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


def inner_layer(layer):
    """The layer a ``TimeDistributed`` wraps, or ``layer`` itself."""
    return layer.layer if isinstance(layer, L.TimeDistributed) else layer


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
        if inner.role in (KERNEL, CARRIER) and not isinstance(layer.layer, ELEMENTWISE_MERGES + (L.Concatenate,)):
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
    if isinstance(layer, _ACTIVATION_LAYERS) or isinstance(layer, MAX_POOLING):
        return Rule(CARRIER)
    if isinstance(layer, ELEMENTWISE_MERGES):
        return Rule(CARRIER, linear=isinstance(layer, (L.Add, L.Subtract, L.Average)))
    cnn = _cnn_rule(layer)
    if cnn is not None:
        return cnn
    if isinstance(layer, L.BatchNormalization) and _last_axis(layer):
        return Rule(CARRIER)
    if isinstance(layer, L.Concatenate) and layer.axis == -1:
        return Rule(CARRIER, linear=True)
    return Rule(BREAKER, reason=f"{type(layer).__name__} is not known to keep units apart")


def _cnn_rule(layer):
    """The rules of a CNN's per-channel layers (keras.applications backbones), or None."""
    if isinstance(layer, L.DepthwiseConv2D):
        if layer.depth_multiplier == 1:
            return Rule(CARRIER)
        return Rule(BREAKER, reason=f"depth_multiplier={layer.depth_multiplier} makes several channels of one")
    if isinstance(layer, L.Rescaling):
        if np.ndim(layer.scale) == 0 and np.ndim(layer.offset) == 0:
            return Rule(CARRIER, linear=float(layer.offset) == 0.0)
        return Rule(BREAKER, reason="Rescaling by a vector")
    if isinstance(layer, L.Reshape):
        return _reshape_rule(layer)
    if type(layer).__name__ == "TFOpLambda":
        function = layer.get_config()["function"]
        if function in _ELEMENTWISE_OPS and _scalar_constants(layer):
            return Rule(CARRIER, linear=_ELEMENTWISE_OPS[function])
        return Rule(BREAKER, reason=f"TFOpLambda {function!r} is not known to keep units apart")
    return None


def _reshape_rule(layer):
    """A Reshape that only adds or drops size-1 axes keeps each channel (an SE block's
    ``Reshape((1, 1, C))``)."""
    try:
        source = tuple(layer.input_shape[1:])
    except (AttributeError, RuntimeError):  # never called: its input is unknown
        source = ()
    target = tuple(layer.target_shape)
    if source and source[-1] is not None and target[-1] == source[-1] and all(
            d == 1 for d in source[:-1] + target[:-1]):
        return Rule(CARRIER, linear=True)
    return Rule(BREAKER, reason=f"Reshape to {target} moves units between axes")


def _scalar_constants(layer):
    """Whether every call of a TFOpLambda passes only scalars besides its tensors."""
    for node in layer._inbound_nodes:
        values = [v for v in tf.nest.flatten((node.call_args, node.call_kwargs))
                  if getattr(v, "_keras_history", None) is None]
        if any(not isinstance(v, (int, float, np.number)) and np.ndim(v) != 0 for v in values):
            return False
    return bool(layer._inbound_nodes)


def _last_axis(layer):
    axis = list(layer.axis) if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    if len(axis) != 1:
        return False
    ndim = layer.input_spec.ndim if getattr(layer, "input_spec", None) is not None else None
    return axis[0] == -1 or (ndim is not None and axis[0] == ndim - 1)


def zero_preserving(activation):
    """True if ``activation(0) == 0``: a unit whose inputs are all zero then stays at zero
    (what zero-unit padding and silencing a unit in one direction rely on)."""
    return float(np.asarray(activation(tf.zeros((1,)))).reshape(-1)[0]) == 0.0


def activation_values(layer, values):
    """What an elementwise carrier (activation layer) makes of constant unit values."""
    values = np.asarray(values, dtype=np.float32)[None, :]
    if isinstance(layer, L.Activation):
        return np.asarray(layer.activation(values)).reshape(-1)
    return np.asarray(layer(values)).reshape(-1)


#: TFOpLambda functions with ``f(0) == 0`` for any scalar constant.
_ZERO_PRESERVING_OPS = frozenset({"math.multiply", "math.truediv", "math.divide", "nn.relu", "nn.relu6",
                                  "math.tanh", "nn.silu", "nn.swish"})


def shifts_zero(layer):
    """Whether a carrier may map a removed unit's 0 to a nonzero constant (then the layer
    reading the units must absorb it, `constant_blocked`). BatchNormalization always may:
    its statistics move during training."""
    inner = inner_layer(layer)
    if isinstance(inner, L.BatchNormalization):
        return True
    if isinstance(inner, (L.Activation,) + _ACTIVATION_LAYERS):
        return bool(np.any(activation_values(inner, [0.0]) != 0))
    if isinstance(inner, L.Rescaling):
        return float(inner.offset) != 0.0
    if type(inner).__name__ == "TFOpLambda":
        return inner.get_config()["function"] not in _ZERO_PRESERVING_OPS
    return False


def constant_blocked(layer):
    """Why ``layer`` cannot take removed units that hold a nonzero constant exactly, or "".

    Carriers carry a constant per unit (an activation maps it, pooling and dropout keep it)
    except those that add zeros or read it as a marker; readers fold it into their bias
    (``bias += c @ kernel[removed rows]``; a Dense, Conv or recurrent layer without a bias gets
    one, a Bidirectional's directions must have theirs), which is
    exact for a Conv only without zero padding along the window.
    """
    inner = inner_layer(layer)
    name = type(inner).__name__
    if isinstance(inner, (L.ZeroPadding1D, L.ZeroPadding2D)):
        return f"{name} pads with zeros, not with the removed units' constants"
    if isinstance(inner, L.Masking):
        return "Masking would read the removed units' constants as data"
    if isinstance(inner, L.DepthwiseConv2D) or type(inner).__name__ == "TFOpLambda":
        return f"{name} is not known to carry a constant unit exactly"
    if isinstance(inner, (L.Conv1D, L.Conv2D)) and inner.padding != "valid":
        return (f"{name} with padding={inner.padding!r} reads zero padding at the edges, so the "
                "removed units' constants cannot fold into its bias (padding='valid' can)")
    if isinstance(inner, L.Bidirectional) and not (inner.forward_layer.cell.use_bias
                                                   and inner.backward_layer.cell.use_bias):
        return f"{name} has use_bias=False: the removed units' constants need a bias to fold into"
    return ""
