"""add_vib_masks: a copy of a trained model with VIB masks wherever stripping can follow.

What may be masked is decided before any training, from the layer registry
(`tf_vib.registry`), by ``mask_plan``:

- a recurrent layer (LSTM, GRU, SimpleRNN, or a Bidirectional of one) gets masks on its
  units when everything its output reaches, through carriers (pooling, dropout,
  activations, BatchNormalization, Concatenate...), reads it through a kernel (Dense,
  Conv1D, another recurrent layer); when that path passes a carrier a per-unit scale does
  not pass (an activation, max pooling, BatchNormalization), or the layer is a
  Bidirectional that sums, averages or multiplies its directions, the masks are hard at
  inference;
- a FeatureMask goes in front of each recurrent layer on the features it reads (unless
  they all come from masked recurrent units), and in front of each Dense or Conv1D that
  reads the units of a hidden Dense, Conv1D or Embedding.

A layer whose units cannot be removed keeps its width; ``MaskPlan.decisions`` says which
and why, and so for the layers making the features a FeatureMask reads whose channels
stripping cannot drop (`tf_vib._channels`: a CNN's last convolution behind a residual Add). With the masks' means at exactly 1 (the warm start), the copy predicts as the
original.
"""

import dataclasses

from tf_vib._channels import channel_decisions
from tf_vib._checks import check_bool
from tf_vib._frames import frame_target
from tf_vib._graph import (
    call_counts,
    graph_nodes,
    is_keras_tensor,
    is_model_output,
    node_outputs,
    rebuild,
    tensor_users,
)
from tf_vib._keras import keras, require_tf_keras_model
from tf_vib.layers.feature_mask import FeatureMask
from tf_vib.layers.vib_gru import VIBGRUCell
from tf_vib.layers.vib_lstm import VIBLSTMCell
from tf_vib.layers.vib_rnn import VIBRNN
from tf_vib.layers.vib_simple_rnn import VIBSimpleRNNCell
from tf_vib.registry import (
    BREAKER,
    CARRIER,
    COLUMN_PRODUCERS,
    KERNEL,
    RECURRENT,
    constant_blocked,
    recurrent_kind,
    rule_of,
    shifts_zero,
    zero_preserving,
)

__all__ = ["add_vib_masks", "mask_plan", "MaskPlan", "LayerDecision", "recurrent_kind", "RNN_KEYS", "rnn_arguments"]

_WARM_MU = {"class_name": "Constant", "config": {"value": 1.0}}
_VIB_CELLS = {"lstm": VIBLSTMCell, "gru": VIBGRUCell, "simple_rnn": VIBSimpleRNNCell}
#: The RNN layer's own arguments (the rest of a plain recurrent layer's config is its cell's).
RNN_KEYS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll", "time_major",
            "zero_output_for_mask", "name", "trainable", "dtype", "activity_regularizer")


@dataclasses.dataclass
class LayerDecision:
    """What ``mask_plan`` decided for one layer: ``masks`` is ``"units"``, ``"inputs"``,
    ``"units, inputs"`` or ``""``; ``reason`` says why a layer's units keep their width."""

    name: str
    type: str
    masks: str
    reason: str = ""


@dataclasses.dataclass
class MaskPlan:
    """Where ``add_vib_masks`` puts masks (see the module docstring)."""

    #: recurrent layer name -> hard masks at inference (True) or folding ones
    units: dict
    #: ids of the nodes that get a FeatureMask on their main input, -> the mask's name
    feature_masks: dict
    decisions: list

    @property
    def empty(self):
        return not self.units and not self.feature_masks

    def describe(self):
        return "; ".join(f"{d.name} ({d.type}): {d.reason}" for d in self.decisions if d.reason)


def _main_input(node):
    args = node.call_args
    return args[0] if args and is_keras_tensor(args[0]) else None


def _only_main_input(node):
    main = _main_input(node)
    return main is not None and len(node.keras_inputs) == 1


def _follow(model, tensor, users, shifted=False):
    """Whether every reader of ``tensor`` (through carriers) reads it through a kernel.

    Returns ``(ok, needs_unscaled, reason)``: ``needs_unscaled`` when a carrier on the way
    does not commute with a per-unit scale. ``shifted``: a carrier before ``tensor`` may
    have made a removed unit's 0 a constant (`tf_vib.registry.shifts_zero`), which every
    layer from here on must carry or absorb (`tf_vib.registry.constant_blocked`).
    """
    if is_model_output(model, tensor):
        return False, False, "its units are a model output"
    readers = users.get(id(tensor), [])
    if not readers:
        return False, False, "nothing reads its units"
    unscaled = False
    for node in readers:
        layer, rule = node.layer, rule_of(node.layer)
        carried = shifted or (rule.role == CARRIER and shifts_zero(layer))
        blocked = constant_blocked(layer) if carried and rule.role in (KERNEL, RECURRENT, CARRIER) else ""
        if blocked:
            return False, False, (f"layer {layer.name!r} reads them after a layer that maps a removed unit's "
                                  f"0 to a constant: {blocked}")
        if rule.role in (KERNEL, RECURRENT):
            if _main_input(node) is not tensor or len(node.keras_inputs) != 1:
                return False, False, f"layer {layer.name!r} reads its units as a state or extra argument"
            continue
        if rule.role == CARRIER and (len(node.keras_inputs) == 1 or isinstance(layer, keras.layers.Concatenate)):
            for out in node_outputs(node):
                ok, inner, why = _follow(model, out, users, shifted or shifts_zero(layer))
                if not ok:
                    return False, False, why
                unscaled |= inner
            unscaled |= not rule.linear
            continue
        reason = rule.reason if rule.role == BREAKER else "it is read with other tensors"
        return False, False, f"layer {layer.name!r} ({type(layer).__name__}): {reason}"
    return True, unscaled, ""


def _sources(tensor, masked_units):
    """The kinds of layer whose units reach ``tensor`` through carriers."""
    history = getattr(tensor, "_keras_history", None)
    layer = history.layer if history is not None else None
    if layer is None or isinstance(layer, keras.layers.InputLayer):
        return {"input"}
    if layer.name in masked_units:
        return {"vib"}
    if type(layer) in COLUMN_PRODUCERS:
        return {"kernel"}
    node = layer._inbound_nodes[history.node_index]
    if rule_of(layer).role == CARRIER:
        kinds = set()
        for source in node.keras_inputs:
            kinds |= _sources(source, masked_units)
        return kinds
    return {"other"}


def _activation_name(layer):
    return getattr(layer.cell.activation, "__name__", type(layer.cell.activation).__name__)


def _units_blocked(layer, node):
    """Why a recurrent layer's units cannot be masked, or ""."""
    inner = layer.forward_layer if isinstance(layer, keras.layers.Bidirectional) else layer
    if isinstance(layer, keras.layers.Bidirectional):
        if layer.merge_mode not in ("concat", "sum", "ave", "mul"):
            return f"merge_mode={layer.merge_mode!r} returns the directions apart"
        if recurrent_kind(layer.backward_layer) != recurrent_kind(inner):
            return "its two directions are different kinds of layer"
        if layer.merge_mode != "concat" and not zero_preserving(inner.cell.activation):
            # a unit dead in one direction only is silenced there (its candidate zeroed),
            # which keeps its state at activation(0): 0 only for zero-preserving activations
            return (f"merge_mode={layer.merge_mode!r} with activation={_activation_name(inner)!r}, "
                    "which is not 0 at 0: a unit cannot be silenced in one direction")
    if inner.return_state:
        return "return_state=True: its states are outputs too"
    if inner.stateful:
        return "stateful=True: its state carries over between batches"
    if len(node.keras_inputs) > 1 or set(node.call_kwargs) & {"initial_state", "constants"}:
        return "it is called with an initial state or constants (exactness needs a zero initial state)"
    if not _only_main_input(node):
        return "it is not called on one input tensor"
    return ""


def mask_plan(model, *, feature_masks=True, dense_masks=True):
    """Decide, from the layer registry, where ``add_vib_masks`` puts masks (no training)."""
    require_tf_keras_model(model, "model")
    users = tensor_users(model)
    nodes = list(graph_nodes(model))
    calls = call_counts(model)
    units, blocked = {}, {}
    for node in nodes:
        layer = node.layer
        if rule_of(layer).role != RECURRENT:
            continue
        reason = _units_blocked(layer, node)
        hard = False
        if calls[id(layer)] > 1:
            reason = "it is called more than once (a shared layer)"
        if not reason:
            ok, hard, why = _follow(model, node_outputs(node)[0], users)
            reason = "" if ok else why
        if reason:
            blocked[layer.name] = f"units kept: {reason}"
            continue
        merged = isinstance(layer, keras.layers.Bidirectional) and layer.merge_mode != "concat"
        units[layer.name] = hard or merged
    masks, taken = {}, {layer.name for layer in model.layers}
    for node in nodes:
        layer, role = node.layer, rule_of(node.layer).role
        main = _main_input(node)
        if role not in (KERNEL, RECURRENT) or main is None or not _maskable_tensor(main) or calls[id(layer)] > 1:
            continue  # a shared layer keeps one kernel for every call: its rows cannot follow one mask
        kinds = _sources(main, units)
        if (feature_masks and role == RECURRENT and kinds - {"vib"}) or (
                dense_masks and role == KERNEL and "kernel" in kinds):
            masks[id(node)] = _unique(f"{layer.name}_input_mask", taken)
    decisions = {}
    for node in nodes:
        layer = node.layer
        parts = (["units"] if layer.name in units else []) + (["inputs"] if id(node) in masks else [])
        if parts or layer.name in blocked:
            decisions.setdefault(layer.name, LayerDecision(layer.name, type(layer).__name__, ", ".join(parts),
                                                           blocked.get(layer.name, "")))
    for layer, reason in channel_decisions(model, masks):
        decisions.setdefault(layer.name, LayerDecision(layer.name, type(layer).__name__, "", reason))
    return MaskPlan(units, masks, list(decisions.values()))


def _maskable_tensor(tensor):
    shape = tensor.shape
    return (tensor.dtype.is_floating and shape.rank in (2, 3) and shape[-1] is not None)


def _unique(name, taken):
    candidate, i = name, 1
    while candidate in taken:
        i += 1
        candidate = f"{name}_{i}"
    taken.add(candidate)
    return candidate


def _vib_rnn(layer, mask_kwargs, gates, hard, frame_steps=None):
    kind = recurrent_kind(layer)
    cell_config = {k: v for k, v in layer.cell.get_config().items() if k not in ("implementation", "name")}
    gate_set = gates.get(kind) if isinstance(gates, dict) else gates
    cell_class = _VIB_CELLS[kind]
    state_gate = cell_class.STATE_GATE
    cell = cell_class(masked_gates=gate_set, hard_gates=state_gate if hard else "", frame_steps=frame_steps,
                      **cell_config, **mask_kwargs)
    return VIBRNN(cell, **rnn_arguments(layer))


def rnn_arguments(layer):
    """The ``keras.layers.RNN`` arguments of a recurrent layer (``RNN_KEYS``), ready to pass."""
    arguments = {k: v for k, v in layer.get_config().items() if k in RNN_KEYS}
    if arguments.get("activity_regularizer") is not None:
        arguments["activity_regularizer"] = keras.regularizers.deserialize(arguments["activity_regularizer"])
    return arguments


def _copy_recurrent_weights(new, old):
    for name in ("kernel", "recurrent_kernel", "bias"):
        if getattr(new.cell, name, None) is not None:
            getattr(new.cell, name).assign(getattr(old.cell, name))


def add_vib_masks(
    model,
    *,
    kl_factor=1e-4,
    input_kl_mult=1.0,
    hidden_kl_mult=1.0,
    dense_kl_mult=1.0,
    masked_gates=None,
    feature_masks=True,
    dense_masks=True,
    warm_start=True,
    frame_masks=False,
):
    """A new model with VIB masks on the units and input features that stripping can remove.

    Args:
      model: a trained Sequential or functional tf_keras model. It is not modified.
      kl_factor: float, the KL weight of every mask (``MaskSettings.kl_factor``).
      input_kl_mult, hidden_kl_mult, dense_kl_mult: float, ``kl_mult`` of the FeatureMask on
        recurrent inputs, of the recurrent gate masks, and of the masks on hidden Dense units.
      masked_gates: str or None, the gates the recurrent masks sit on (every gate by
        default); a dict ``{"lstm": ..., "gru": ..., "simple_rnn": ...}`` sets them per kind.
      feature_masks: put a FeatureMask in front of recurrent layers, on the features they read.
      dense_masks: put a FeatureMask on the units of hidden Dense, Conv1D and Embedding layers.
      warm_start: start every mask mean at exactly 1, so the copy predicts as the original.
      frame_masks: bool, default False. Give the first recurrent layer a ``TimeMask`` (one
        gate per frame position, ``tf_vib.layers.time_mask``), so that ``strip_masks``
        gives a model that reads only the kept frames. Refused (ValueError) for a model
        whose frames cannot be skipped exactly (see ``tf_vib._frames``).

    Returns:
      The VIB model (a Sequential if ``model`` is one). Its weights are the original's.

    Raises:
      ValueError: nothing in ``model`` can be masked; the message says why, layer by layer.
        Or ``frame_masks=True`` on a model whose frames cannot be pruned.
    """
    check_bool("frame_masks", frame_masks)
    plan = mask_plan(model, feature_masks=feature_masks, dense_masks=dense_masks)
    if plan.empty:
        why = plan.describe() or "it has no recurrent layer and no hidden Dense, Conv1D or Embedding units"
        raise ValueError(
            f"`model` {model.name!r} has nothing tf-vib can compress: {why}. Layers: "
            f"{[type(layer).__name__ for layer in model.layers]}"
        )
    frames = frame_target(model, plan.units) if frame_masks else None
    mu = {"mu_initializer": _WARM_MU} if warm_start else {}
    hidden = dict(kl_factor=kl_factor, kl_mult=hidden_kl_mult, **mu)
    built = {}

    def replace(call):
        node, layer = call.node, call.layer
        if id(node) in plan.feature_masks:
            kind = rule_of(layer).role
            mult = input_kl_mult if kind == RECURRENT else dense_kl_mult
            mask = FeatureMask(name=plan.feature_masks[id(node)], kl_factor=kl_factor, kl_mult=mult, **mu)
            call.args = (mask(call.args[0]), *call.args[1:])
        if layer.name not in plan.units:
            return None
        hard = plan.units[layer.name]
        if isinstance(layer, keras.layers.Bidirectional):
            forward = _vib_rnn(layer.forward_layer, hidden, masked_gates, hard)
            backward = _vib_rnn(layer.backward_layer, hidden, masked_gates, hard)
            new = keras.layers.Bidirectional(forward, backward_layer=backward, merge_mode=layer.merge_mode,
                                             name=layer.name)
            output = call.call(new)
            _copy_recurrent_weights(new.forward_layer, layer.forward_layer)
            _copy_recurrent_weights(new.backward_layer, layer.backward_layer)
        else:
            steps = frames.steps if frames is not None and node is frames.node else None
            new = _vib_rnn(layer, hidden, masked_gates, hard, steps)
            output = call.call(new)
            _copy_recurrent_weights(new, layer)
        built[layer.name] = new
        return output

    return rebuild(model, replace, name=f"{model.name}_vib")
