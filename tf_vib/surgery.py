"""strip_masks: turn a model with VIB layers into a plain, smaller Keras model.

The walk follows the model's graph once. For every tensor it keeps a ``Channels``
record that relates the new (stripped) tensor to the masked model's tensor:

    masked[..., physical[j]] == scale[j] * stripped[..., j]    for live j
    masked[..., c] == 0                                          for every other c

A mask changes the record and vanishes; a layer that reads the tensor through a
kernel (Dense, LSTM, GRU...) takes the live rows of its kernel, scaled; a recurrent
VIB layer keeps only its living units and folds its mask means (see the cells'
docstrings for which gates fold). Any other layer must receive its input unchanged.
"""

import dataclasses

import numpy as np

from tf_vib._graph import as_list, graph_nodes, tensor_users
from tf_vib._keras import keras, require_tf_keras_model
from tf_vib.layers.base import is_vib_layer
from tf_vib.layers.feature_mask import FeatureMask
from tf_vib.layers.recurrent import VIBRNN
from tf_vib.layers.select_features import SelectFeatures
from tf_vib.layers.vib_gru import VIBGRUCell
from tf_vib.layers.vib_lstm import VIBLSTMCell
from tf_vib.layers.vib_mask import GaussianMask

__all__ = ["strip_masks", "kept_input_features", "alive_units", "unit_gates", "LayerRecord", "MEMORYLESS_BIAS"]

#: Gate bias given to a unit whose forget (LSTM) or update (GRU) mask is pruned: the gate
#: is then sigmoid(-30) ~ 1e-13, i.e. zero, and the unit keeps no memory, as in the masked cell.
MEMORYLESS_BIAS = -30.0

_ROW_SLICEABLE = (
    keras.layers.Dense,
    keras.layers.LSTM,
    keras.layers.GRU,
    keras.layers.SimpleRNN,
    keras.layers.Conv1D,
)
_PASS_THROUGH = (
    keras.layers.Dropout,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
)


@dataclasses.dataclass
class Channels:
    physical: np.ndarray  # original channel index of each channel of the new tensor
    scale: np.ndarray
    live: np.ndarray
    total: int

    @classmethod
    def full(cls, total):
        return cls(np.arange(total), np.ones(total), np.ones(total, bool), total)

    @property
    def is_full(self):
        return (
            len(self.physical) == self.total
            and np.array_equal(self.physical, np.arange(self.total))
            and self.live.all()
            and np.all(self.scale == 1.0)
        )


@dataclasses.dataclass
class LayerRecord:
    """What stripping did to one layer: the basis of ``tf_vib.summary``."""

    name: str
    kind: str
    units_total: int | None
    units_kept: int | None
    inputs_total: int | None
    inputs_kept: int | None
    params_before: int
    params_after: int


def _check_threshold(threshold):
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)):
        raise TypeError(f"`threshold` must be a number or None; received {threshold!r}")
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(
            f"`threshold` must be a finite number >= 0 (a unit is kept while its log_alpha "
            f"< threshold; 0 is the paper's rule and prunes the most); received {threshold!r}"
        )
    return float(threshold)


def _kept(mask: GaussianMask, threshold):
    threshold = mask.settings.keep_threshold if threshold is None else threshold
    log_alpha = np.asarray(mask.log_alpha(), dtype=np.float64)
    return log_alpha < threshold, log_alpha


def unit_gates(cell):
    """The gates of a VIB cell whose mask can remove a unit, the state's own first: an
    LSTM's output, candidate and input gates (``"oci"``); a GRU's candidate (``"h"``)."""
    return "oci" if isinstance(cell, VIBLSTMCell) else "h"


def alive_units(cell, threshold):
    """Which units of a VIB cell survive ``threshold``, and each unit's score.

    A unit survives while every mask that can remove it keeps it (an LSTM's input, candidate
    and output gates; a GRU's candidate); its score is the largest log_alpha among those
    masks (large means noise). Returns ``(alive, score)``, NumPy vectors of ``cell.units``.
    """
    alive = np.ones(cell.units, bool)
    score = np.full(cell.units, -np.inf)
    for gate in unit_gates(cell):
        if gate in cell.vib_masks:
            kept, log_alpha = _kept(cell.vib_masks[gate], threshold)
            alive &= kept
            score = np.maximum(score, log_alpha)
    return alive, score


def _deterministic(mask, kept):
    mu = np.asarray(mask.mu, dtype=np.float64)
    return mu * kept if mask.folds else kept.astype(np.float64)


def _too_few(layer_name, what, log_alpha_of_unit, total):
    best = float(np.min(log_alpha_of_unit))
    return ValueError(
        f"strip_masks would remove all {total} {what} of layer {layer_name!r}. Its most "
        f"informative unit has log_alpha {best:.4g}: pass threshold > {max(best, 0.0):.4g} "
        "to keep it, or min_units=1 to keep the best units of every layer"
    )


def _force_min(kept_unit, score, min_units, layer_name, what):
    """Keep at least ``min_units`` units (those with the lowest score), or raise."""
    if kept_unit.sum() >= max(min_units, 1):
        return kept_unit
    if min_units == 0:
        raise _too_few(layer_name, what, score, len(score))
    forced = kept_unit.copy()
    forced[np.argsort(score, kind="stable")[: min(min_units, len(score))]] = True
    return forced


class _Stripper:
    def __init__(self, model, threshold, min_units, input_features):
        self.model = model
        self.threshold = threshold
        self.min_units = min_units
        self.input_features = input_features
        self.records = []
        self.kept_inputs = {}
        self.consumers = tensor_users(self.model)

    # -- masks ------------------------------------------------------------------------

    def feature_mask_values(self, layer):
        kept, log_alpha = _kept(layer.mask, self.threshold)
        kept = _force_min(kept, log_alpha, self.min_units, layer.name, "features")
        return _deterministic(layer.mask, kept)

    def cell_mask_values(self, layer):
        """Deterministic value of every gate mask, and which units are alive."""
        cell = layer.cell
        kept = {gate: _kept(mask, self.threshold)[0] for gate, mask in cell.vib_masks.items()}
        alive, score = alive_units(cell, self.threshold)
        forced = _force_min(alive, score, self.min_units, layer.name, "units")
        for gate in unit_gates(cell):
            if gate in kept:
                kept[gate] = kept[gate] | (forced & ~alive)
        values = {g: np.ones(cell.units) for g in cell.GATES}
        values.update({g: _deterministic(m, kept[g]) for g, m in cell.vib_masks.items()})
        return values, forced

    # -- the walk -----------------------------------------------------------------------

    def run(self):
        tensors = {}
        new_inputs = []
        for tensor, name in zip(self.model.inputs, self.model.input_names, strict=True):
            channels = Channels.full(tensor.shape[-1]) if tensor.shape.rank else None
            shape = tensor.shape
            kept = self._kept_model_input(tensor)
            if kept is not None:
                channels = Channels(np.flatnonzero(kept), np.ones(kept.sum()), np.ones(kept.sum(), bool), len(kept))
                shape = shape[:-1].concatenate([int(kept.sum())])
                self.kept_inputs[name] = np.flatnonzero(kept)
            new = keras.Input(
                batch_size=shape[0], shape=tuple(shape[1:].as_list()), dtype=tensor.dtype, name=name
            )
            new_inputs.append(new)
            tensors[id(tensor)] = (new, channels)
        for node in graph_nodes(self.model):
            inputs = [tensors[id(t)] for t in node.keras_inputs]
            outputs = as_list(node.outputs)
            result = self.strip_node(node, inputs)
            for original, new in zip(outputs, result if isinstance(result, list) else [result], strict=True):
                tensors[id(original)] = new
        new_outputs = []
        for tensor in self.model.outputs:
            new, channels = tensors[id(tensor)]
            if channels is not None and not channels.is_full:
                raise ValueError(
                    f"the output of layer {tensor._keras_history.layer.name!r} is a model "
                    "output, so its units cannot be removed or rescaled: put a Dense layer "
                    "after the last VIB layer"
                )
            new_outputs.append(new)
        functional = keras.Model(new_inputs, new_outputs, name=self.model.name)
        if not isinstance(self.model, keras.Sequential):
            return functional
        # A Sequential in, a Sequential out: the layers (already built, weights set) are reused.
        spec = new_inputs[0]
        return keras.Sequential(
            [keras.Input(batch_size=spec.shape[0], shape=spec.shape[1:], dtype=spec.dtype)]
            + functional.layers[1:],
            name=self.model.name,
        )

    def _kept_model_input(self, tensor):
        if self.input_features != "kept":
            return None
        users = self.consumers.get(id(tensor), [])
        if len(users) == 1 and isinstance(users[0].layer, FeatureMask):
            return self.feature_mask_values(users[0].layer) != 0
        return None

    def strip_node(self, node, inputs):
        layer = node.layer
        if set(node.call_kwargs) - {"training", "mask"}:
            raise ValueError(
                f"strip_masks cannot rebuild layer {layer.name!r}: it was called with "
                f"{sorted(set(node.call_kwargs) - {'training', 'mask'})}"
            )
        if isinstance(layer, FeatureMask):
            return self.strip_feature_mask(layer, inputs[0])
        if is_vib_layer(layer):
            return self.strip_recurrent(layer, inputs[0])
        if isinstance(layer, keras.Model) and any(is_vib_layer(sub) for sub in _all_layers(layer)):
            raise ValueError(
                f"the nested model {layer.name!r} contains VIB layers: strip_masks needs them "
                "at the top level of the model (call strip_masks on the nested model)"
            )
        if len(inputs) == 1 and _row_sliceable(layer):
            return self.strip_consumer(layer, node, inputs[0])
        return self.copy_other(layer, node, inputs)

    def strip_feature_mask(self, layer, source):
        tensor, channels = source
        values = self.feature_mask_values(layer)
        mask_values = values[channels.physical]
        live = channels.live & (mask_values != 0)
        self.records.append(
            LayerRecord(layer.name, "FeatureMask", None, None, channels.total, int(live.sum()), 0, 0)
        )
        return tensor, Channels(channels.physical, channels.scale * mask_values, live, channels.total)

    def _gathered(self, tensor, channels, name):
        """The tensor with only its live channels, through SelectFeatures if any are dead."""
        if channels.live.all():
            return tensor, channels
        keep = np.flatnonzero(channels.live)
        tensor = SelectFeatures(keep.tolist(), name=f"{name}_select")(tensor)
        return tensor, Channels(channels.physical[keep], channels.scale[keep], np.ones(len(keep), bool), channels.total)

    def _output_columns(self, node):
        """Columns a Dense may drop: those its only consumer, a FeatureMask, prunes."""
        out = as_list(node.outputs)[0]
        users = self.consumers.get(id(out), [])
        is_model_output = any(out is t for t in self.model.outputs)
        if len(users) == 1 and isinstance(users[0].layer, FeatureMask) and not is_model_output:
            return np.flatnonzero(self.feature_mask_values(users[0].layer) != 0)
        return None

    def strip_consumer(self, layer, node, source):
        tensor, channels = self._gathered(*source, layer.name)
        weights = layer.get_weights()
        kernel = weights[0]
        axis = kernel.ndim - 2  # the input-feature axis (Conv1D kernels have a width axis first)
        kernel = np.take(kernel, channels.physical, axis=axis)
        shape = [1] * kernel.ndim
        shape[axis] = -1
        weights[0] = (kernel * channels.scale.reshape(shape)).astype(kernel.dtype)
        config = layer.get_config()
        out_channels = None
        columns = self._output_columns(node) if isinstance(layer, keras.layers.Dense) else None
        if columns is not None and len(columns) < config["units"]:
            weights[0] = weights[0][:, columns]
            if layer.use_bias:
                weights[1] = weights[1][columns]
            out_channels = Channels(columns, np.ones(len(columns)), np.ones(len(columns), bool), config["units"])
            config["units"] = len(columns)
        new_layer = type(layer).from_config(config)
        output = new_layer(tensor)
        new_layer.set_weights(weights)
        units = config.get("units", config.get("filters"))
        self.records.append(
            LayerRecord(
                layer.name, type(layer).__name__, _units(layer), units,
                channels.total, len(channels.physical), layer.count_params(), new_layer.count_params(),
            )
        )
        return output, out_channels or _full_like(output)

    def strip_recurrent(self, layer, source):
        if type(layer) not in (keras.layers.RNN, VIBRNN):
            raise ValueError(
                f"strip_masks can strip a VIB cell only inside a plain keras.layers.RNN or a "
                f"VIBRNN; layer {layer.name!r} is a {type(layer).__name__}"
            )
        if layer.return_state or layer.stateful:
            raise ValueError(
                f"strip_masks cannot strip layer {layer.name!r} with return_state=True or "
                "stateful=True: its exactness needs a zero initial state and one output"
            )
        tensor, channels = self._gathered(*source, layer.name)
        cell = layer.cell
        values, alive = self.cell_mask_values(layer)
        units = np.flatnonzero(alive)
        u, n = cell.units, len(units)
        gates = len(cell.GATES)
        cols = np.concatenate([g * u + units for g in range(gates)])
        kernel = cell.kernel.numpy()[channels.physical][:, cols] * channels.scale[:, None]
        if isinstance(cell, VIBLSTMCell):
            state_scale = values["o"][units]
            memory_gate = 1  # f
            memoryless = values["f"][units] == 0
        else:
            state_scale = values["h"][units]
            memory_gate = 0  # z
            memoryless = values["z"][units] == 0
        recurrent = cell.recurrent_kernel.numpy()[units][:, cols] * state_scale[:, None]
        bias = cell.bias.numpy()[..., cols].copy() if cell.use_bias else None
        if isinstance(cell, VIBGRUCell):
            reset = values["r"][units]
            if cell.reset_after:
                recurrent[:, 2 * n :] *= reset[None, :]
                if bias is not None:
                    bias[1, 2 * n :] *= reset
            else:
                recurrent[:, 2 * n :] *= reset[:, None]
        columns = memory_gate * n + np.flatnonzero(memoryless)
        kernel[:, columns] = 0.0
        recurrent[:, columns] = 0.0
        if len(columns):
            if bias is None:
                raise ValueError(
                    f"layer {layer.name!r} has units whose memory gate is pruned, which needs a "
                    "bias to express exactly; build the cell with use_bias=True"
                )
            if bias.ndim == 2:
                bias[0, columns], bias[1, columns] = MEMORYLESS_BIAS, 0.0
            else:
                bias[columns] = MEMORYLESS_BIAS
        new_layer = _plain_recurrent(layer, n)
        output = new_layer(tensor)
        weights = [kernel, recurrent] + ([bias] if bias is not None else [])
        new_layer.set_weights([w.astype(np.float32) for w in weights])
        before = sum(int(np.prod(w.shape)) for w in (cell.kernel, cell.recurrent_kernel))
        before += int(np.prod(cell.bias.shape)) if cell.use_bias else 0
        self.records.append(
            LayerRecord(
                layer.name, type(cell).__name__.replace("VIB", "").replace("Cell", ""), u, n,
                channels.total, len(channels.physical), before, new_layer.count_params(),
            )
        )
        return output, Channels(units, state_scale, np.ones(n, bool), u)

    def copy_other(self, layer, node, inputs):
        for tensor, channels in inputs:
            if channels is not None and not channels.is_full:
                if isinstance(layer, _PASS_THROUGH) and len(inputs) == 1:
                    return _call_copy(layer, node, [tensor]), channels
                raise ValueError(
                    f"strip_masks cannot carry removed or rescaled units through layer "
                    f"{layer.name!r} ({type(layer).__name__}); put VIB masks only directly "
                    "before Dense, LSTM, GRU, SimpleRNN or Conv1D layers"
                )
        output = _call_copy(layer, node, [t for t, _ in inputs])
        self.records.append(
            LayerRecord(layer.name, type(layer).__name__, _units(layer), _units(layer), None, None,
                        layer.count_params(), layer.count_params())
        )
        outputs = as_list(output)
        result = [(o, _full_like(o)) for o in outputs]
        return result if isinstance(output, (list, tuple)) else result[0]


def _full_like(tensor):
    rank = tensor.shape.rank
    return Channels.full(int(tensor.shape[-1])) if rank and tensor.shape[-1] is not None else None


def _units(layer):
    return getattr(layer, "units", None) or getattr(getattr(layer, "cell", None), "units", None)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _row_sliceable(layer):
    if isinstance(layer, _ROW_SLICEABLE):
        return True
    if isinstance(layer, keras.layers.TimeDistributed):
        return isinstance(layer.layer, keras.layers.Dense)
    return type(layer) is keras.layers.RNN and isinstance(
        layer.cell, (keras.layers.LSTMCell, keras.layers.GRUCell, keras.layers.SimpleRNNCell)
    )


def _call_copy(layer, node, tensors):
    if isinstance(layer, keras.Model):
        new_layer = keras.models.clone_model(layer)
    else:
        new_layer = type(layer).from_config(layer.get_config())
    output = new_layer(tensors[0] if len(tensors) == 1 else tensors)
    new_layer.set_weights(layer.get_weights())
    return output


def _plain_recurrent(layer, units):
    cell = layer.cell
    common = dict(
        units=units,
        activation=cell.activation,
        recurrent_activation=cell.recurrent_activation,
        use_bias=cell.use_bias,
        kernel_regularizer=cell.kernel_regularizer,
        recurrent_regularizer=cell.recurrent_regularizer,
        bias_regularizer=cell.bias_regularizer,
        kernel_constraint=cell.kernel_constraint,
        recurrent_constraint=cell.recurrent_constraint,
        bias_constraint=cell.bias_constraint,
        return_sequences=layer.return_sequences,
        go_backwards=layer.go_backwards,
        unroll=layer.unroll,
        time_major=layer.time_major,
        name=layer.name,
    )
    if isinstance(cell, VIBLSTMCell):
        return keras.layers.LSTM(**common, unit_forget_bias=False)
    return keras.layers.GRU(**common, reset_after=cell.reset_after)


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

    Returns a new plain tf_keras model (``LSTM``, ``GRU``, ``Dense`` and the user's other
    layers; a ``SelectFeatures`` gather where a FeatureMask sat on the model's own input)
    whose outputs equal the masked model's deterministic outputs. Pruned hidden units are
    removed from the recurrent layer and from the next layer's kernel rows, surviving mask
    means are folded into the weights, and a Dense layer followed by a FeatureMask loses its
    pruned columns. The input model is not modified.

    Exactness assumes a zero initial state (the recurrent layers' default).

    Args:
      model: a Sequential or functional tf_keras model.
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
    ['InputLayer', 'LSTM', 'Dense']
    """
    _check_model(model, input_features, min_units)
    threshold = _check_threshold(threshold)
    stripper = _Stripper(model, threshold, int(min_units), input_features)
    stripped = stripper.run()
    return (stripped, stripper.records) if return_records else stripped


def kept_input_features(model, *, threshold=None, min_units=0):
    """The indices of the model-input features that survive, by input name.

    Only inputs read by exactly one FeatureMask appear. These are the columns the
    user's data must hold for ``strip_masks(model, input_features="kept")``.
    """
    _check_model(model, "kept", min_units)
    stripper = _Stripper(model, _check_threshold(threshold), int(min_units), "kept")
    stripper.run()
    return dict(stripper.kept_inputs)
