"""Channel groups: where the features a FeatureMask prunes can leave the layers that make them.

Tensors joined by carriers (`tf_vib.registry`: BatchNormalization, activations, pooling,
DepthwiseConv2D, the elementwise merges of a hard-swish...) index the same channels: they
form one *group*. Its *sources* are the layers whose outputs enter it, its *sinks* the
layers that read it from outside. The group's channels can be dropped where they are made
when every source can drop output columns (a Dense, Conv1D, Conv2D or Embedding called once,
a ``TimeDistributed`` of one, or a nested model, or a ``TimeDistributed`` of one, whose own
output group can) and every sink is a FeatureMask: the channels kept are those some mask
keeps. Otherwise the group keeps its width and the reason names the layer that stopped it
(a kernel reading the channels whole, a residual Add or a squeeze-and-excite Multiply whose
other input is read so, a Flatten, anything unknown). Folding table: docs/design.md.
"""

import dataclasses

import numpy as np

from tf_vib._graph import call_counts, graph_nodes, is_model_output, node_outputs, tensor_users
from tf_vib._kept import Channels
from tf_vib._keras import keras
from tf_vib.registry import CARRIER, CHANNEL_PRODUCERS, KERNEL, RECURRENT, inner_layer, rule_of

__all__ = ["Group", "group_of", "blocked", "droppable_columns", "channel_decisions", "drop_columns"]


@dataclasses.dataclass
class Group:
    """Tensors sharing one channel axis, with the nodes around them."""

    tensors: dict  # id -> tensor
    sources: list  # the nodes whose outputs enter the group (None: a model input)
    sinks: list  # the nodes that read a tensor of the group and are not in it
    output: bool  # a tensor of the group is a model output
    joins: list  # the multi-input carriers inside (Add, Multiply...)


def _producer(tensor):
    history = tensor._keras_history
    if isinstance(history.layer, keras.layers.InputLayer):
        return None
    return history.layer._inbound_nodes[history.node_index]


def _joins(node, calls):
    """Whether ``node`` keeps every channel where it is (a carrier of one width)."""
    layer = node.layer
    if rule_of(layer).role != CARRIER or isinstance(inner_layer(layer), keras.layers.Concatenate):
        return False
    if calls[id(layer)] > 1 and layer.weights:
        return False  # one set of weights for every call: they cannot follow one group
    tensors = list(node.keras_inputs) + node_outputs(node)
    if any((t.shape.rank or 0) < 2 for t in tensors):
        return False
    widths = {t.shape[-1] for t in tensors}
    return len(widths) == 1 and None not in widths


def group_of(model, tensor, users, calls):
    """The group of ``tensor`` in ``model``'s graph."""
    group = Group({}, [], [], False, [])
    stack, sources, sinks = [tensor], {}, {}
    while stack:
        t = stack.pop()
        if id(t) in group.tensors:
            continue
        group.tensors[id(t)] = t
        group.output |= is_model_output(model, t)
        producer = _producer(t)
        if producer is not None and _joins(producer, calls):
            stack.extend(producer.keras_inputs)
            if len(producer.keras_inputs) > 1 and producer not in group.joins:
                group.joins.append(producer)
        else:
            sources.setdefault(id(producer), producer)
        for node in users.get(id(t), []):
            if _joins(node, calls):
                stack.extend(list(node.keras_inputs) + node_outputs(node))
            else:
                sinks.setdefault(id(node), node)
    group.sources, group.sinks = list(sources.values()), list(sinks.values())
    return group


def _named(layer):
    return f"layer {layer.name!r} ({type(layer).__name__})"


def _source_blocked(node, calls):
    """Why a source cannot drop output columns, or ""."""
    if node is None:
        return "they come from the model input"
    layer = node.layer
    inner = inner_layer(layer)
    if calls[id(layer)] > 1:
        return f"{_named(layer)} is called more than once"
    if isinstance(inner, keras.Model):
        why = _nested_blocked(inner)
        return f"in model {inner.name!r}, {why}" if why else ""
    if type(inner) in CHANNEL_PRODUCERS and getattr(inner, "groups", 1) == 1 and not (
            inner is not layer and isinstance(inner, keras.layers.Embedding)):
        return ""
    return f"{_named(layer)}: {rule_of(layer).reason or 'its output channels cannot be dropped'}"


def _nested_blocked(model):
    if len(model.outputs) != 1:
        return "the model has several outputs"
    calls = call_counts(model)
    return blocked(group_of(model, model.outputs[0], tensor_users(model), calls), calls, lambda node: False,
                   output=True)


def blocked(group, calls, wants, *, output=False):
    """Why ``group`` keeps its width, or "" when its channels can be dropped.

    ``wants(node)`` says whether a sink prunes channels (a FeatureMask); ``output`` whether
    a model output may lose channels (a nested model's, which its caller prunes).
    """
    via = ""
    if group.joins:
        join = group.joins[0]
        via = f" (they meet at {_named(join.layer)}, whose inputs must all drop the same channels)"
    for node in group.sources:
        why = _source_blocked(node, calls)
        if why:
            return why + via
    if group.output and not output:
        return "they are a model output" + via
    for node in group.sinks:
        if wants(node):
            continue
        role = rule_of(node.layer).role
        if role in (KERNEL, RECURRENT):
            return f"{_named(node.layer)} reads every one of them through its kernel" + via
        if role == CARRIER:
            return f"{_named(node.layer)} joins them with other tensors" + via
        return f"{_named(node.layer)}: {rule_of(node.layer).reason}" + via
    return ""


def droppable_columns(model, wanted, *, output_kept=None):
    """``{layer name: kept columns}`` for the channel sources whose group can drop channels.

    Args:
      model: the (masked) model whose graph is read.
      wanted: ``wanted(node) -> bool vector or None``, the channels a sink keeps (a
        FeatureMask's), None for a sink that reads them all.
      output_kept: bool vector, the channels a nested model's caller keeps of its output.
    """
    users, calls = tensor_users(model), call_counts(model)
    columns, seen = {}, set()
    for node in graph_nodes(model):
        out = node_outputs(node)[0]
        if id(out) in seen or _source_blocked(node, calls):
            continue
        group = group_of(model, out, users, calls)
        seen |= set(group.tensors)
        if blocked(group, calls, lambda n: wanted(n) is not None, output=output_kept is not None):
            continue
        kept = [wanted(n) for n in group.sinks] + ([output_kept] if group.output else [])
        kept = np.logical_or.reduce(kept) if kept else None
        if kept is not None and not kept.all():
            for source in group.sources:
                columns[source.layer.name] = np.flatnonzero(kept)
    return columns


def channel_decisions(model, masked_nodes):
    """``[(layer, reason)]``: the layers whose output a FeatureMask reads (``masked_nodes``,
    ids of the nodes that get one) but whose channels stay, and the layer that stopped them."""
    users, calls = tensor_users(model), call_counts(model)
    decisions, seen = [], set()
    for node in graph_nodes(model):
        if id(node) not in masked_nodes or id(node.keras_inputs[0]) in seen:
            continue
        group = group_of(model, node.keras_inputs[0], users, calls)
        seen |= set(group.tensors)
        sources = [s for s in group.sources if s is not None and rule_of(s.layer).role != RECURRENT]
        why = blocked(group, calls, lambda n: id(n) in masked_nodes) if sources else ""
        if why:
            decisions.append((sources[0].layer, f"channels kept: {why}"))
    return decisions


def drop_columns(call, columns):
    """Build a Conv2D, or a TimeDistributed Dense/Conv1D/Conv2D, with only ``columns`` of
    its output. Returns ``(output, new_layer, channels)``."""
    layer = call.layer
    config = layer.get_config()
    inner = config["layer"]["config"] if isinstance(layer, keras.layers.TimeDistributed) else config
    key = "units" if "units" in inner else "filters"
    total = inner[key]
    weights = layer.get_weights()
    weights[0] = weights[0][..., columns]
    if len(weights) > 1:
        weights[1] = weights[1][columns]
    inner[key] = len(columns)
    new_layer = type(layer).from_config(config)
    output = call.call(new_layer)
    new_layer.set_weights(weights)
    return output, new_layer, Channels.unused(columns, total)
