"""strip_masks: turn a model with VIB layers into a plain, smaller Keras model.

The model is rebuilt once (`tf_vib._graph.rebuild`). For every tensor the walk keeps a
``Channels`` record that relates the new (stripped) tensor to the masked model's tensor:

    masked[..., physical[j]] == scale[j] * stripped[..., j]    for live j
    masked[..., c] == 0                                          for every other c

A mask changes the record and vanishes; a layer that reads the tensor through a kernel
(Dense, Conv1D, LSTM, GRU, SimpleRNN, Bidirectional) takes the live rows of its kernel,
scaled; a VIB recurrent layer keeps its living units, and its cell folds its mask means
(``VIBRecurrentCell.fold``); Dense, Conv1D and Embedding layers whose every reader prunes
some of their units lose those columns; carriers (`tf_vib.registry`) carry the record
through; any other layer must receive its input unchanged.
"""


import numpy as np

from tf_vib import bridge
from tf_vib._carriers import carry
from tf_vib._graph import (
    call_counts,
    graph_nodes,
    is_model_output,
    node_outputs,
    rebuild,
    tensor_users,
)
from tf_vib._kept import (
    Channels,
    LayerRecord,
    alive_units,
    check_threshold,
    deterministic,
    force_min,
    full_like,
    mask_kept,
    unit_gates,
)
from tf_vib._keras import keras, require_tf_keras_model
from tf_vib.layers.base import is_vib_layer
from tf_vib.layers.feature_mask import FeatureMask
from tf_vib.layers.recurrent import MEMORYLESS_BIAS, VIBRecurrentCell
from tf_vib.layers.select_features import SelectFeatures
from tf_vib.registry import CARRIER, COLUMN_PRODUCERS, KERNEL, RECURRENT, rule_of
from tf_vib.wrap import rnn_arguments

__all__ = ["strip_masks", "kept_input_features", "alive_units", "unit_gates", "LayerRecord", "MEMORYLESS_BIAS"]



def _vib_cell(layer):
    cell = getattr(layer, "cell", None)
    return cell if isinstance(cell, VIBRecurrentCell) else None


def _vib_recurrent(layer):
    if isinstance(layer, keras.layers.Bidirectional):
        return _vib_cell(layer.forward_layer) is not None
    return _vib_cell(layer) is not None


def _plain_recurrent(layer, units):
    cell = layer.cell
    config = {**cell.plain_cell_config(), "units": units}
    config.update(rnn_arguments(layer))
    return cell.PLAIN_LAYER(**config)


def _kernel_indices(layer):
    """Which of ``layer.get_weights()`` are kernels that read the layer's input."""
    if isinstance(layer, keras.layers.Bidirectional):
        return [0, len(layer.forward_layer.get_weights())]
    return [0]


class _Stripper:
    def __init__(self, model, threshold, min_units, input_features):
        self.model = model
        self.threshold = threshold
        self.min_units = min_units
        self.input_features = input_features
        self.records = []
        self.kept_inputs = {}
        self.users = tensor_users(model)
        self.channels = {}
        self._feature_values = {}
        self.columns = self._droppable_columns()

    # -- masks ------------------------------------------------------------------------

    def feature_mask_values(self, layer):
        if layer.name not in self._feature_values:
            kept, log_alpha = mask_kept(layer.mask, self.threshold)
            kept = force_min(kept, log_alpha, self.min_units, layer.name, "features")
            self._feature_values[layer.name] = deterministic(layer.mask, kept)
        return self._feature_values[layer.name]

    def cell_mask_values(self, layer):
        """Deterministic value of every gate mask, and which units are alive."""
        cell = layer.cell
        kept = {gate: mask_kept(mask, self.threshold)[0] for gate, mask in cell.vib_masks.items()}
        alive, score = alive_units(cell, self.threshold)
        forced = force_min(alive, score, self.min_units, layer.name, "units")
        for gate in unit_gates(cell):
            if gate in kept:
                kept[gate] = kept[gate] | (forced & ~alive)
        values = {g: np.ones(cell.units) for g in cell.GATES}
        values.update({g: deterministic(m, kept[g]) for g, m in cell.vib_masks.items()})
        return values, forced

    def _droppable_columns(self):
        """``{layer name: kept columns}`` for Dense/Conv1D/Embedding layers whose every reader
        (through carriers) is a FeatureMask that prunes some of their units."""
        columns, calls = {}, call_counts(self.model)
        for node in graph_nodes(self.model):
            layer = node.layer
            if type(layer) not in COLUMN_PRODUCERS or calls[id(layer)] > 1:
                continue
            kept = self._kept_downstream(node_outputs(node)[0])
            if kept is not None and not kept.all():
                columns[layer.name] = np.flatnonzero(kept)
        return columns

    def _kept_downstream(self, tensor):
        readers = self.users.get(id(tensor), [])
        if is_model_output(self.model, tensor) or not readers:
            return None
        kept = None
        for node in readers:
            layer = node.layer
            if isinstance(layer, FeatureMask):
                here = self.feature_mask_values(layer) != 0
            elif rule_of(layer).role == CARRIER and len(node.keras_inputs) == 1:
                here = self._kept_downstream(node_outputs(node)[0])
            else:
                return None
            if here is None:
                return None
            kept = here if kept is None else kept | here
        return kept

    # -- the walk -----------------------------------------------------------------------

    def new_input(self, tensor, name):
        channels = full_like(tensor)
        new = None
        kept = self._kept_model_input(tensor)
        if kept is not None:
            channels = Channels.subset(np.flatnonzero(kept), len(kept))
            shape = tensor.shape[:-1].concatenate([int(kept.sum())])
            self.kept_inputs[name] = np.flatnonzero(kept)
            new = keras.Input(batch_size=shape[0], shape=tuple(shape[1:].as_list()), dtype=tensor.dtype, name=name)
        self.channels[id(tensor)] = channels
        return new

    def run(self):
        stripped = rebuild(self.model, self.replace, new_input=self.new_input)
        for tensor in self.model.outputs:
            channels = self.channels.get(id(tensor))
            if channels is not None and not channels.is_full:
                raise ValueError(
                    f"the output of layer {tensor._keras_history.layer.name!r} is a model "
                    "output, so its units cannot be removed or rescaled: put a Dense layer "
                    "after the last VIB layer"
                )
        return stripped

    def _kept_model_input(self, tensor):
        if self.input_features != "kept":
            return None
        users = self.users.get(id(tensor), [])
        if len(users) == 1 and isinstance(users[0].layer, FeatureMask):
            return self.feature_mask_values(users[0].layer) != 0
        return None

    def _set(self, node, channels):
        outputs = node_outputs(node)
        channels = channels if isinstance(channels, list) else [channels] * len(outputs)
        for tensor, record in zip(outputs, channels, strict=True):
            self.channels[id(tensor)] = record

    def replace(self, call):
        node, layer = call.node, call.layer
        inputs = [self.channels.get(id(t)) for t in node.keras_inputs]
        main = inputs[0] if inputs and node.call_args and node.call_args[0] is node.keras_inputs[0] else None
        if isinstance(layer, FeatureMask):
            output, channels = self.strip_feature_mask(layer, call.args[0], inputs[0])
        elif _vib_recurrent(layer):
            output, channels = self.strip_recurrent(call, main)
        elif isinstance(layer, keras.Model) and any(is_vib_layer(sub) for sub in _all_layers(layer)):
            raise ValueError(
                f"the nested model {layer.name!r} contains VIB layers: strip_masks needs them "
                "at the top level of the model (call strip_masks on the nested model)"
            )
        elif layer.name in self.columns or (rule_of(layer).role in (KERNEL, RECURRENT) and main is not None
                                            and not main.is_full and len(inputs) == 1):
            output, channels = self.strip_consumer(call, main)
        elif rule_of(layer).role == CARRIER and any(c is not None and not c.is_full for c in inputs):
            output, channels = self.carry(call, inputs)
        else:
            output, channels = self.copy_other(call, inputs)
        self._set(node, channels)
        return output

    def strip_feature_mask(self, layer, tensor, channels):
        values = self.feature_mask_values(layer)
        mask_values = values[channels.physical]
        live = channels.live & (mask_values != 0)
        self.records.append(
            LayerRecord(layer.name, "FeatureMask", None, None, channels.total, int(live.sum()), 0, 0)
        )
        return tensor, Channels(channels.physical, channels.scale * mask_values, live, channels.total)

    def _gathered(self, tensor, channels, name):
        """The tensor with only its live channels, through SelectFeatures if any are dead."""
        if channels is None or channels.live.all():
            return tensor, channels
        keep = np.flatnonzero(channels.live)
        tensor = SelectFeatures(keep.tolist(), name=f"{name}_select")(tensor)
        return tensor, Channels(channels.physical[keep], channels.scale[keep], np.ones(len(keep), bool), channels.total)

    def strip_consumer(self, call, source):
        """A layer that reads its input through kernel rows, and may drop output columns."""
        layer = call.layer
        weights, config = layer.get_weights(), layer.get_config()
        tensor, channels = self._gathered(call.args[0], source, layer.name)
        if channels is not None and not channels.is_full and not isinstance(layer, keras.layers.Embedding):
            for i in _kernel_indices(layer):
                kernel = weights[i]
                axis = kernel.ndim - 2  # the input-feature axis (Conv1D kernels have a width axis first)
                kernel = np.take(kernel, channels.physical, axis=axis)
                shape = [1] * kernel.ndim
                shape[axis] = -1
                weights[i] = (kernel * channels.scale.reshape(shape)).astype(kernel.dtype)
        out_channels = None
        columns = self.columns.get(layer.name)
        if columns is not None:
            key = {"Dense": "units", "Conv1D": "filters", "Embedding": "output_dim"}[type(layer).__name__]
            total = config[key]
            weights[0] = weights[0][..., columns]
            if len(weights) > 1:
                weights[1] = weights[1][columns]
            config[key] = len(columns)
            out_channels = Channels.subset(columns, total)
        new_layer = type(layer).from_config(config)
        output = call.call(new_layer, first=tensor)
        new_layer.set_weights(weights)
        self.records.append(
            LayerRecord(
                layer.name, type(layer).__name__, _units(layer), _units(new_layer),
                channels.total if channels else None, len(channels.physical) if channels else None,
                layer.count_params(), new_layer.count_params(),
            )
        )
        return output, out_channels or [full_like(t) for t in node_outputs(call.node)]

    def strip_recurrent(self, call, source):
        layer = call.layer
        inner = layer.forward_layer if isinstance(layer, keras.layers.Bidirectional) else layer
        if inner.return_state or inner.stateful:
            raise ValueError(
                f"strip_masks cannot strip layer {layer.name!r} with return_state=True or "
                "stateful=True: its exactness needs a zero initial state and one output"
            )
        if source is None:
            source = Channels.full(int(call.node.keras_inputs[0].shape[-1]))
        tensor, channels = self._gathered(call.args[0], source, layer.name)
        cell = inner.cell
        if not isinstance(layer, keras.layers.Bidirectional):
            values, alive = self.cell_mask_values(layer)
            units = np.flatnonzero(alive)
            weights, scale = self._fold(layer, values, units, channels)
            new_layer = _plain_recurrent(layer, len(units))
            output = call.call(new_layer, first=tensor)
            new_layer.set_weights(weights)
            record = Channels(units, scale, np.ones(len(units), bool), cell.units)
            kind, total, kept = cell.PLAIN_LAYER.__name__, cell.units, len(units)
        else:
            output, record, new_layer = self._strip_bidirectional(call, tensor, channels)
            kind, total, kept = f"Bidirectional({cell.PLAIN_LAYER.__name__})", record.total, len(record.physical)
        self.records.append(LayerRecord(layer.name, kind, total, kept, channels.total, len(channels.physical),
                                        _params(layer), new_layer.count_params()))
        return output, record

    def _fold(self, layer, values, units, channels):
        cell = layer.cell
        rows = cell.kernel.numpy()[channels.physical] * channels.scale[:, None]
        return cell.fold(values, units, rows)

    def _strip_bidirectional(self, call, tensor, channels):
        layer = call.layer
        directions = [layer.forward_layer, layer.backward_layer]
        masks = [self.cell_mask_values(d) for d in directions]
        u = directions[0].cell.units
        if layer.merge_mode == "concat":
            units = [np.flatnonzero(alive) for _, alive in masks]
            folded = [self._fold(d, values, k, channels) for d, (values, _), k in zip(directions, masks, units, strict=True)]
            physical = np.concatenate([units[0], u + units[1]])
            scale = np.concatenate([folded[0][1], folded[1][1]])
            sizes = [len(k) for k in units]
        else:
            alive = masks[0][1] | masks[1][1]
            shared = np.flatnonzero(alive)
            folded = []
            for direction, (values, own) in zip(directions, masks, strict=True):
                weights, scale = self._fold(direction, values, shared, channels)
                live_scale = scale[own[shared]]
                if not np.all(live_scale == 1.0):
                    raise ValueError(
                        f"Bidirectional layer {layer.name!r} merges its directions with "
                        f"{layer.merge_mode!r}, which needs hard state masks (hard_gates); "
                        "add_vib_masks builds them so"
                    )
                folded.append((direction.cell.silence(weights, np.flatnonzero(~own[shared])), scale))
            physical, scale, sizes = shared, np.ones(len(shared)), [len(shared)] * 2
        plain = [_plain_recurrent(d, n) for d, n in zip(directions, sizes, strict=True)]
        new_layer = keras.layers.Bidirectional(plain[0], backward_layer=plain[1], merge_mode=layer.merge_mode,
                                               name=layer.name)
        output = call.call(new_layer, first=tensor)
        new_layer.set_weights(folded[0][0] + folded[1][0])
        total = 2 * u if layer.merge_mode == "concat" else u
        return output, Channels(physical, scale, np.ones(len(physical), bool), total), new_layer

    def carry(self, call, inputs):
        return carry(call, inputs)

    def copy_other(self, call, inputs):
        layer = call.layer
        for channels in inputs:
            if channels is not None and not channels.is_full:
                raise ValueError(
                    f"strip_masks cannot carry removed or rescaled units through layer "
                    f"{layer.name!r} ({type(layer).__name__}): {rule_of(layer).reason or 'it mixes units'}; "
                    "put VIB masks only where add_vib_masks puts them"
                )
        self.records.append(
            LayerRecord(layer.name, type(layer).__name__, _units(layer), _units(layer), None, None,
                        layer.count_params(), layer.count_params())
        )
        return None, [full_like(t) for t in node_outputs(call.node)]


def _units(layer):
    if isinstance(layer, keras.layers.Bidirectional):
        return _units(layer.forward_layer)
    return (getattr(layer, "units", None) or getattr(layer, "filters", None) or getattr(layer, "output_dim", None)
            or getattr(getattr(layer, "cell", None), "units", None))


def _params(layer):
    """Parameters of a layer without its VIB masks' own variables."""
    masks = sum(int(np.prod(v.shape)) for owner in _owners(layer) for v in owner.mask_variables)
    kl = sum(1 for owner in _owners(layer))
    return layer.count_params() - masks - kl


def _owners(layer):
    inner = [layer.forward_layer, layer.backward_layer] if isinstance(layer, keras.layers.Bidirectional) else [layer]
    return [d.cell for d in inner if _vib_cell(d) is not None]


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _check_model(model, input_features, min_units):
    require_tf_keras_model(model, "model")
    if input_features not in ("all", "kept"):
        raise ValueError(
            f"`input_features` must be 'all' (keep the model's input signature and select "
            f"the kept features inside) or 'kept' (the input holds only the kept features); "
            f"received {input_features!r}"
        )
    if isinstance(min_units, bool) or not isinstance(min_units, (int, np.integer)) or min_units < 0:
        raise ValueError(f"`min_units` must be an integer >= 0; received {min_units!r}")


def strip_masks(model, *, threshold=None, min_units=0, input_features="all", return_records=False):
    """Remove every VIB mask, the pruned units and the pruned input features.

    Returns a new plain tf_keras model (``LSTM``, ``GRU``, ``SimpleRNN``, ``Bidirectional``,
    ``Dense`` and the user's other layers; a ``SelectFeatures`` gather where a FeatureMask
    sat on the model's own input) whose outputs equal the masked model's deterministic
    outputs. Pruned hidden units are removed from the recurrent layer and from the next
    layer's kernel rows, surviving mask means are folded into the weights, and a Dense,
    Conv1D or Embedding layer whose readers prune some of its units loses those columns.
    Every call argument, dtype and layer setting of the model is kept. The input model is
    not modified.

    Exactness assumes a zero initial state (the recurrent layers' default).

    Args:
      model: a Sequential or functional tf_keras model (or Keras 3 one: the result is then
        a Keras 3 model, through `tf_vib.bridge`).
      threshold: float >= 0 or None (default). A unit is kept while its
        ``log_alpha < threshold``; None uses each layer's ``keep_threshold``.
      min_units: int, default 0. Keep at least this many units (and features) per layer,
        the most informative ones. With 0, a layer that would lose all its units raises.
      input_features: ``"all"`` (default) keeps the model's input signature; ``"kept"``
        makes the new model's input hold only the kept features (see
        ``kept_input_features`` for their indices).
      return_records: also return the per-layer ``LayerRecord`` list.

    Returns:
      The plain model, or ``(model, records)`` with ``return_records=True``.

    Example:

    >>> import tf_vib
    >>> vib = keras.Sequential([keras.Input((6, 3)),
    ...                         keras.layers.RNN(tf_vib.layers.VIBLSTMCell(4)),
    ...                         keras.layers.Dense(2)])
    >>> [type(layer).__name__ for layer in tf_vib.strip_masks(vib).layers]
    ['LSTM', 'Dense']
    """
    model, back = bridge.to_internal(model, "model")
    _check_model(model, input_features, min_units)
    threshold = check_threshold(threshold)
    stripper = _Stripper(model, threshold, int(min_units), input_features)
    stripped = back(stripper.run())
    return (stripped, stripper.records) if return_records else stripped


def kept_input_features(model, *, threshold=None, min_units=0):
    """The indices of the model-input features that survive, by input name.

    Only inputs read by exactly one FeatureMask appear. These are the columns the
    user's data must hold for ``strip_masks(model, input_features="kept")``.
    """
    _check_model(model, "kept", min_units)
    stripper = _Stripper(model, check_threshold(threshold), int(min_units), "kept")
    stripper.run()
    return dict(stripper.kept_inputs)
