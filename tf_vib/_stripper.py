"""The graph walk behind `strip_masks` (see tf_vib/surgery.py for the record it keeps): one
``_Stripper`` per model, a `tf_vib._graph.rebuild` callback that folds each VIB layer into
its plain counterpart and carries the kept channels to the layers that read them."""

import numpy as np

from tf_vib._absorb import absorb_constants, kernel_indices
from tf_vib._carriers import carry
from tf_vib._channels import drop_columns, droppable_columns
from tf_vib._frames import frame_masked, kept_frames
from tf_vib._graph import (
    node_outputs,
    rebuild,
    tensor_users,
)
from tf_vib._kept import (
    Channels,
    LayerRecord,
    alive_units,
    deterministic,
    force_min,
    full_like,
    mask_kept,
    unit_gates,
)
from tf_vib._keras import keras
from tf_vib.layers.base import is_vib_layer
from tf_vib.layers.feature_mask import FeatureMask
from tf_vib.layers.recurrent import VIBRecurrentCell
from tf_vib.layers.select_features import SelectFeatures
from tf_vib.layers.time_mask import SelectFrames
from tf_vib.registry import CARRIER, COLUMN_PRODUCERS, KERNEL, RECURRENT, rule_of
from tf_vib.wrap import rnn_arguments

__all__ = ["Stripper"]


def _vib_cell(layer):
    cell = getattr(layer, "cell", None)
    return cell if isinstance(cell, VIBRecurrentCell) else None


def _vib_recurrent(layer):
    if isinstance(layer, keras.layers.Bidirectional):
        return _vib_cell(layer.forward_layer) is not None
    return _vib_cell(layer) is not None


def _plain_recurrent(layer, units, weights):
    """The plain layer of a VIB recurrent ``layer`` with ``units``, for its folded ``weights``
    (which hold a bias the cell had not when `fold` added one)."""
    cell = layer.cell
    config = {**cell.plain_cell_config(), "units": units, "use_bias": len(weights) > 2}
    config.update(rnn_arguments(layer))
    return cell.PLAIN_LAYER(**config)


class Stripper:
    def __init__(self, model, threshold, min_units, input_features, input_frames="kept", *, output_columns=None):
        self.model = model
        self.input_frames = input_frames
        self.frames = frame_masked(model)
        self.kept_frames = kept_frames(model, threshold=threshold, min_units=min_units) if self.frames else None
        self.threshold = threshold
        self.min_units = min_units
        self.input_features = input_features
        self.records = []
        self.kept_inputs = {}
        self.users = tensor_users(model)
        self.channels = {}
        self._feature_values = {}
        #: a nested model's: the channels of its output its caller keeps
        self.output_columns = output_columns
        self.columns = droppable_columns(model, self._wanted, output_kept=_kept_vector(model, output_columns))

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

    def _wanted(self, node):
        """The channels a reader keeps (a FeatureMask's), or None when it reads them all."""
        return self.feature_mask_values(node.layer) != 0 if isinstance(node.layer, FeatureMask) else None

    # -- the walk -----------------------------------------------------------------------

    def new_input(self, tensor, name):
        channels = full_like(tensor)
        dims = tensor.shape.as_list()
        kept = self._kept_model_input(tensor)
        if kept is not None:
            channels = Channels.subset(np.flatnonzero(kept), len(kept))
            dims[-1] = int(kept.sum())
            self.kept_inputs[name] = np.flatnonzero(kept)
        if self.frames is not None and tensor is self.frames.input and self.input_frames == "kept":
            dims[1] = len(self.kept_frames["kept"])
        self.channels[id(tensor)] = channels
        if dims == tensor.shape.as_list():
            return None
        return keras.Input(batch_size=dims[0], shape=tuple(dims[1:]), dtype=tensor.dtype, name=name)

    # -- frames (a TimeMask) ---------------------------------------------------------------

    def _select_frames(self, call):
        """With ``input_frames="all"``: the kept frames gathered where the frames are first read."""
        if (self.frames is None or self.input_frames != "all"
                or call.node is not self.users[id(self.frames.input)][0]):
            return
        selected = SelectFrames(self.kept_frames["kept"], name=f"{self.frames.node.layer.name}_frames")(call.args[0])
        call.args = (selected, *call.args[1:])

    def _frames_record(self, layer):
        if self.frames is not None and layer is self.frames.node.layer:
            kept, total = len(self.kept_frames["kept"]), self.kept_frames["of"]
            self.records.append(LayerRecord(f"{layer.name} frames", "TimeMask", total, kept, None, None, 0, 0))

    def run(self):
        stripped = rebuild(self.model, self.replace, new_input=self.new_input)
        for tensor in self.model.outputs:
            channels = self.channels.get(id(tensor))
            if self.output_columns is not None:
                if channels is None or not np.array_equal(channels.physical, self.output_columns):
                    raise ValueError(f"strip_masks could not drop the output channels of nested model "
                                     f"{self.model.name!r}")
            elif channels is not None and not channels.is_full:
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
        self._select_frames(call)
        if isinstance(layer, FeatureMask):
            output, channels = self.strip_feature_mask(layer, call.args[0], inputs[0])
        elif _vib_recurrent(layer):
            output, channels = self.strip_recurrent(call, main)
        elif isinstance(layer, keras.Model) and any(is_vib_layer(sub) for sub in _all_layers(layer)):
            raise ValueError(
                f"the nested model {layer.name!r} contains VIB layers: strip_masks needs them "
                "at the top level of the model (call strip_masks on the nested model)"
            )
        elif layer.name in self.columns and type(layer) not in COLUMN_PRODUCERS:
            output, channels = self.strip_producer(call)
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
        offset = np.where(values == 0, 0.0, channels.offsets() * values)  # a constant passes the mask scaled
        return tensor, Channels(channels.physical, channels.scale * mask_values, live, channels.total, offset)

    def _gathered(self, tensor, channels, name):
        """The tensor with only its live channels, through SelectFeatures if any are dead."""
        if channels is None or channels.live.all():
            return tensor, channels
        keep = np.flatnonzero(channels.live)
        tensor = SelectFeatures(keep.tolist(), name=f"{name}_select")(tensor)
        return tensor, Channels(channels.physical[keep], channels.scale[keep], np.ones(len(keep), bool), channels.total,
                                channels.offset)

    def strip_consumer(self, call, source):
        """A layer that reads its input through kernel rows, and may drop output columns."""
        layer = call.layer
        weights, config = layer.get_weights(), layer.get_config()
        tensor, channels = self._gathered(call.args[0], source, layer.name)
        if channels is not None and channels.shifted():
            weights, config = absorb_constants(layer, weights, config, channels.constants())
        if channels is not None and not channels.is_full and not isinstance(layer, keras.layers.Embedding):
            for i in kernel_indices(layer):
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
            out_channels = Channels.unused(columns, total)
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

    def strip_producer(self, call):
        """A channel source of `tf_vib._channels` (a Conv2D, a TimeDistributed layer, a nested
        model) that makes only the channels its readers keep."""
        layer, columns = call.layer, self.columns[call.layer.name]
        inner = layer.layer if isinstance(layer, keras.layers.TimeDistributed) else layer
        if isinstance(inner, keras.Model):
            sub = Stripper(inner, self.threshold, self.min_units, "all", output_columns=columns)
            new_inner = sub.run()
            self.records.extend(sub.records)
            new_layer = keras.layers.TimeDistributed(new_inner, name=layer.name) if inner is not layer else new_inner
            output = call.call(new_layer)
            channels = Channels.unused(columns, int(node_outputs(call.node)[0].shape[-1]))
        else:
            output, new_layer, channels = drop_columns(call, columns)
            self.records.append(LayerRecord(layer.name, type(layer).__name__, channels.total, len(columns),
                                            None, None, layer.count_params(), new_layer.count_params()))
        return output, channels

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
            new_layer = _plain_recurrent(layer, len(units), weights)
            output = call.call(new_layer, first=tensor)
            new_layer.set_weights(weights)
            record = Channels(units, scale, np.ones(len(units), bool), cell.units)
            kind, total, kept = cell.PLAIN_LAYER.__name__, cell.units, len(units)
        else:
            output, record, new_layer = self._strip_bidirectional(call, tensor, channels)
            kind, total, kept = f"Bidirectional({cell.PLAIN_LAYER.__name__})", record.total, len(record.physical)
        self.records.append(LayerRecord(layer.name, kind, total, kept, channels.total, len(channels.physical),
                                        _params(layer), new_layer.count_params()))
        self._frames_record(layer)
        return output, record

    def _fold(self, layer, values, units, channels):
        cell = layer.cell
        kernel = cell.kernel.numpy()
        rows = kernel[channels.physical] * channels.scale[:, None]
        shift = channels.constants() @ kernel if channels.shifted() else None
        return cell.fold(values, units, rows, input_bias_shift=shift)

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
        plain = [_plain_recurrent(d, n, f[0]) for d, n, f in zip(directions, sizes, folded, strict=True)]
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


def _kept_vector(model, columns):
    if columns is None:
        return None
    kept = np.zeros(int(model.outputs[0].shape[-1]), bool)
    kept[columns] = True
    return kept


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
