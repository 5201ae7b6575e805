"""Fused LSTMs padded with zero units to a multiple the float kernels run faster."""

import numpy as np

from converters.plan._common import LayerPlan, clone_with, has_input_mask, one_kernel_consumer
from tf_vib._graph import call_counts, graph_nodes, tensor_users
from tf_vib._keras import keras
from tf_vib.registry import FUSED_LSTM_UNIT_MULTIPLE, zero_preserving

__all__ = ["AUTO_UNIT_MULTIPLE", "resolve_unit_multiple", "padded_units", "pad_units"]

#: ``unit_multiple="auto"``: the fused LSTM's units are padded to a multiple of this in the
#: float modes (float32, dynamic, float16), and left as they are in int8 (see `pad_units`).
#: It is the multiple compress() trims its LSTMs to when accuracy allows.
AUTO_UNIT_MULTIPLE = FUSED_LSTM_UNIT_MULTIPLE


def resolve_unit_multiple(unit_multiple, quantization):
    """The multiple the fused LSTMs' units are padded to: an int >= 1 (1: no padding)."""
    if unit_multiple == "auto":
        return 1 if quantization in ("int8", "auto") else AUTO_UNIT_MULTIPLE
    if isinstance(unit_multiple, bool) or not isinstance(unit_multiple, (int, np.integer)) or unit_multiple < 1:
        raise ValueError(f"`unit_multiple` must be 'auto' or an integer >= 1 (1: no padding); "
                         f"received {unit_multiple!r}")
    return int(unit_multiple)


def padded_units(units, multiple):
    """``units`` rounded up to a multiple of ``multiple``: the size `pad_units` gives an LSTM."""
    return -(-units // multiple) * multiple


def _paddable(node, users, model, calls):
    """Why the ``keras.layers.LSTM`` of ``node`` cannot get zero units, or None if it can."""
    layer = node.layer
    if has_input_mask(node) or layer.stateful or layer.return_state:
        return "it is masked, stateful or returns its state"
    if not zero_preserving(layer.activation):
        return f"its activation {layer.activation.__name__} is not zero at zero"
    if len(node.keras_inputs) != 1:
        return "it takes an initial state"
    return one_kernel_consumer(node, users, model, calls)


def _pad_gates(array, units, padded, axis):
    """``array`` with each of its 4 gate blocks of ``units`` along ``axis`` zero-padded to ``padded``."""
    blocks = np.split(array, 4, axis=axis)
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, padded - units)
    return np.concatenate([np.pad(block, widths) for block in blocks], axis=axis)


def pad_units(model, multiple):
    """The model with each fused LSTM's units padded with zero units to a multiple of ``multiple``.

    TFLite's float kernels work on 4 floats at a time, and a unit count that is not a
    multiple of 4 pays for the remainder, on x86 and on a Raspberry Pi's Cortex-A72; the
    full-int8 kernel grows with every unit instead, so ``"auto"`` pads only the float
    modes (measured in docs/deployment.md, "Zero units: a multiple of 4").

    A zero unit (zero kernel and recurrent columns, zero bias) has gates at
    ``sigmoid(0)`` and a candidate ``tanh(0) = 0``, so its cell and output stay exactly 0
    from the zero initial state; its rows in the next layer's kernel are zero as well, so
    the outputs are unchanged. Only LSTMs that will become the fused op, whose output
    feeds one kernel layer (Dense, LSTM, GRU, SimpleRNN), are padded.

    Args:
      model: a plain tf_keras model; it is not modified.
      multiple: int >= 1; 1 leaves the model as it is.

    Returns:
      ``(model, [LayerPlan])``: the model (the same object if nothing was padded) and one
      plan per LSTM whose units are not already a multiple, saying what it became.
    """
    if multiple == 1:
        return model, []
    nodes = list(graph_nodes(model))
    users = tensor_users(model)
    calls = call_counts(model)
    plans, weights, configs = [], {}, {}
    for node in nodes:
        layer = node.layer
        units = getattr(layer, "units", None)
        if type(layer) is not keras.layers.LSTM or units % multiple == 0:
            continue
        consumers = users.get(id(node.outputs), [])
        why = _paddable(node, consumers, model, calls)
        if why is not None:
            plans.append(LayerPlan(layer.name, "LSTM", f"{units} units, not padded ({why})"))
            continue
        padded = padded_units(units, multiple)
        own = weights.setdefault(id(layer), layer.get_weights())
        own[0] = _pad_gates(own[0], units, padded, axis=1)
        own[1] = _pad_gates(np.pad(own[1], ((0, padded - units), (0, 0))), units, padded, axis=1)
        if layer.use_bias:
            own[2] = _pad_gates(own[2], units, padded, axis=0)
        configs[id(layer)] = {**configs.get(id(layer), layer.get_config()), "units": padded}
        consumer = consumers[0].layer
        theirs = weights.setdefault(id(consumer), consumer.get_weights())
        theirs[0] = np.pad(theirs[0], ((0, padded - units), (0, 0)))
        configs.setdefault(id(consumer), consumer.get_config())
        plans.append(LayerPlan(layer.name, "LSTM", f"{padded} units: {padded - units} zero "
                                                   f"unit{'s' if padded - units > 1 else ''} added (a "
                                                   f"multiple of {multiple} runs faster)"))
    if not weights:
        return model, plans
    replacements = {}
    for layer in model.layers:
        if id(layer) in weights:
            replacement = type(layer).from_config(configs[id(layer)])
            replacement._tf_vib_weights = weights[id(layer)]
            replacements[id(layer)] = replacement
    return clone_with(model, replacements), plans
