"""``quantization="auto"``: int8 for the layers whose int8 kernel is faster on the target, float32 elsewhere.

The choice follows a cost table: for each layer kind (``lstm``: the fused LSTM, ``dense``,
``conv``: Conv1D and Conv2D, ``conv1x1``: their pointwise form, which was measured to
scale otherwise, ``depthwise``: DepthwiseConv2D; also inside ``TimeDistributed`` and inside nested models, such as a
``keras.applications`` CNN wrapped in ``TimeDistributed``), rows of measured
instructions per invoke of a one-layer file in float32 and in int8 (float input and
output, so the int8 row pays the QUANTIZE and DEQUANTIZE an int8 layer between float ones
pays), keyed by the layer's multiply-accumulates per invoke (`layer_macs`). A layer is int8
when the table's int8/float32 ratio at its size, interpolated between the rows on a log
scale and held at the ends, is below 1. A layer of a known kind the table has no rows for
is float32 (nothing says int8 pays). Layers of other kinds follow the ops around them
(int8 where the quantizer can). The shipped table (`DEFAULT_COST_TABLE`) was measured on an
emulated Raspberry Pi 4 by ``benchmarks/cost_table.py`` (docs/deployment.md).

The float layers are left out of quantization by TFLite's selective quantization
(``tf.lite.experimental.QuantizationDebugger`` with ``denylisted_nodes``), run in the
converter's child process; `float_layer_ops` tells it which ops belong to them.
"""

import json
import math
import os
import pathlib

import numpy as np

from converters.plan._common import LayerPlan
from tf_vib._graph import graph_nodes
from tf_vib._keras import keras

__all__ = ["DEFAULT_COST_TABLE", "FALLBACK_FLOAT_KINDS", "load_cost_table", "layer_kind", "layer_macs", "auto_plan",
           "float_layer_ops", "unplanned_layers"]

#: The table shipped with the package: an emulated Cortex-A72 (Raspberry Pi 4).
DEFAULT_COST_TABLE = pathlib.Path(__file__).resolve().parent.parent / "cost_tables" / "cortex_a72.json"

_KINDS = {keras.layers.LSTM: "lstm", keras.layers.Dense: "dense", keras.layers.Conv1D: "conv",
          keras.layers.Conv2D: "conv", keras.layers.DepthwiseConv2D: "depthwise"}
_OPS = {"lstm": "UNIDIRECTIONAL_SEQUENCE_LSTM", "dense": "FULLY_CONNECTED", "conv": "CONV_2D",
        "conv1x1": "CONV_2D", "depthwise": "DEPTHWISE_CONV_2D"}


def _refuse(what, value):
    shown = repr(value)
    raise ValueError(f"`cost_table` {what}; received {shown[:120] + '...' if len(shown) > 120 else shown}. "
                     "It must be a path to a JSON cost table or a dict like "
                     "{'costs': {runtime: {kind: [{'macs': int, 'float32': int, 'int8': int}, ...]}}} "
                     "(see benchmarks/cost_table.py)")


def load_cost_table(cost_table=None):
    """The cost table as a checked dict: None (the shipped one), a path to its JSON, or a dict."""
    if cost_table is None:
        cost_table = DEFAULT_COST_TABLE
    if isinstance(cost_table, (str, os.PathLike)):
        path = pathlib.Path(cost_table)
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            _refuse(f"could not be read as JSON ({type(error).__name__}: {error})", str(path))
    elif isinstance(cost_table, dict):
        table = cost_table
    else:
        _refuse("must be None, a path or a dict", cost_table)
    costs = table.get("costs") if isinstance(table, dict) else None
    if not isinstance(costs, dict) or not costs:
        _refuse("has no 'costs' mapping of runtime to kinds", table)
    for runtime, kinds in costs.items():
        if not isinstance(kinds, dict):
            _refuse(f"costs[{runtime!r}] is not a mapping of kind to rows", kinds)
        for kind, rows in kinds.items():
            if kind not in _OPS:
                _refuse(f"costs[{runtime!r}] has an unknown kind {kind!r} (known: {sorted(_OPS)})", kind)
            if not isinstance(rows, list) or not rows:
                _refuse(f"costs[{runtime!r}][{kind!r}] is not a non-empty list of rows", rows)
            for row in rows:
                values = [row.get(key) for key in ("macs", "float32", "int8")] if isinstance(row, dict) else [None]
                if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values):
                    _refuse(f"costs[{runtime!r}][{kind!r}] has a row without positive 'macs', "
                            "'float32' and 'int8'", row)
    return table


def _inner(layer):
    return layer.layer if isinstance(layer, keras.layers.TimeDistributed) else layer


def layer_kind(layer):
    """``"lstm"``, ``"dense"``, ``"conv"``, ``"conv1x1"``, ``"depthwise"`` or None: the cost table's kind for ``layer``."""
    inner = _inner(layer)
    kind = _KINDS.get(type(inner))
    return "conv1x1" if kind == "conv" and set(inner.kernel_size) == {1} else kind


def layer_macs(layer, input_shape=None, output_shape=None):
    """Multiply-accumulates of one sample's invoke of ``layer`` (a kind `layer_kind` knows).

    The shapes (batch first) default to the layer's own; ``TimeDistributed`` counts its
    layer once per step.
    """
    input_shape = tuple(layer.input_shape if input_shape is None else input_shape)
    output_shape = tuple(layer.output_shape if output_shape is None else output_shape)
    inner, repeats = _inner(layer), 1
    if inner is not layer:
        repeats, input_shape, output_shape = input_shape[1], input_shape[1:], output_shape[1:]
    kind = layer_kind(layer)
    if kind == "lstm":
        units = inner.units
        return int(repeats * input_shape[1] * 4 * units * (input_shape[-1] + units))
    kernel = _kernel(inner).shape.num_elements()
    positions = input_shape[1:-1] if kind == "dense" else output_shape[1:-1]  # convolutions: per output
    return int(repeats * kernel * np.prod(positions, dtype=np.int64))


def _kernel(layer):
    return layer.depthwise_kernel if isinstance(layer, keras.layers.DepthwiseConv2D) else layer.kernel


def _ratio(rows, macs):
    """int8/float32 of the rows at ``macs``: log-linear between rows, held beyond the ends."""
    points = sorted((math.log(r["macs"]), math.log(r["int8"] / r["float32"])) for r in rows)
    x = math.log(max(macs, 1))
    return math.exp(float(np.interp(x, [p[0] for p in points], [p[1] for p in points])))


def _weight_shape(layer):
    """The shape of the layer's weights as TFLite stores them in its op (the match key)."""
    inner = _inner(layer)
    if isinstance(inner, keras.layers.LSTM):
        return [inner.units, int(inner.cell.kernel.shape[0])]
    kernel = tuple(int(d) for d in _kernel(inner).shape)
    if isinstance(inner, keras.layers.DepthwiseConv2D):  # (kh, kw, in, multiplier) -> [1, kh, kw, in x multiplier]
        return [1, kernel[0], kernel[1], kernel[2] * kernel[3]]
    if isinstance(inner, keras.layers.Dense):
        return [kernel[1], kernel[0]]
    if isinstance(inner, keras.layers.Conv1D):
        return [kernel[2], 1, kernel[0], kernel[1]]
    return [kernel[3], kernel[0], kernel[1], kernel[2]]


#: The fallback steps of `auto_plan` (``quantization="auto"`` after a missed verification,
#: `converters.tflite`): the kinds each one makes float32 whatever the table says.
FALLBACK_FLOAT_KINDS = {"recurrent": ("lstm",), "float32": tuple(_OPS)}


def auto_plan(model, cost_table, runtime, fallback=None):
    """``([LayerPlan], [float layer])`` for a prepared model: one plan per layer of a known kind.

    Args:
      model: the prepared (plain, traced-ready) model.
      cost_table: a dict from `load_cost_table`.
      runtime: the runtime the file is for; the table must hold its costs.
      fallback: None (the table's plan), or a key of `FALLBACK_FLOAT_KINDS`: ``"recurrent"``
        (the fused LSTMs float32, the other layers as the table says) or ``"float32"``
        (every planned layer float32); such a layer's reason says so and keeps the table's.
    """
    costs = cost_table["costs"].get(runtime)
    if costs is None:
        raise ValueError(f"`cost_table` has no costs for runtime={runtime!r}; it has {sorted(cost_table['costs'])}")
    forced = FALLBACK_FLOAT_KINDS[fallback] if fallback is not None else ()
    planned = []
    for name, layer, macs in _known_layers(model):
        kind = layer_kind(layer)
        if kind not in costs:  # the table cannot say that int8 pays: the safe mode
            planned.append((name, layer, "float32", f"no rows for kind {kind!r}"))
            continue
        ratio = _ratio(costs[kind], macs)
        mode, why = "int8" if ratio < 1 else "float32", f"int8/float32 {ratio:.2f} at {macs:,} MACs"
        if mode == "int8" and kind in forced:
            mode, why = "float32", f"{why}, but fallback {fallback!r}: an earlier plan was abandoned"
        planned.append((name, layer, mode, why))
    # The worker finds a float layer's ops by op type and weight shape; a layer that shares
    # them with a float one would be kept float too, so it is planned float, and says why.
    float_keys = {_match_key(layer) for _, layer, mode, _ in planned if mode == "float32"}
    plans, floats = [], []
    for name, layer, mode, why in planned:
        if mode == "int8" and _match_key(layer) in float_keys:
            mode, why = "float32", f"{why}, but its op and weight shape are those of a float layer"
        plans.append(LayerPlan(name, type(_inner(layer)).__name__, f"{mode} (cost table: {why})"))
        if mode == "float32":
            floats.append(layer)
    return plans, floats


def _known_layers(model, repeats=1, prefix=""):
    """``(name, layer, MACs per invoke)`` for each layer of a kind `layer_kind` knows, nested models included.

    A nested model's layers are named ``outer/inner``; inside ``TimeDistributed(model)``
    each counts once per step (the converted graph runs them on batch x steps frames).
    """
    for node in graph_nodes(model):
        layer, name = node.layer, prefix + node.layer.name
        inner = _inner(layer)
        if isinstance(inner, keras.Model):
            steps = int(node.keras_inputs[0].shape[1]) if inner is not layer else 1
            yield from _known_layers(inner, repeats * steps, name + "/")
            continue
        kind = layer_kind(layer)
        if kind is None:
            continue
        yield name, layer, repeats * layer_macs(layer, node.keras_inputs[0].shape, node.outputs.shape)


def unplanned_layers(model, prefix=""):
    """``[(name, layer type)]``: the layers with weights whose kind no cost table has (a GRU,
    BatchNormalization, Embedding, ...), nested models included. The plan does not choose their
    mode: selective quantization makes them int8 where it can in a file with int8 layers."""
    found = []
    for node in graph_nodes(model):
        layer, name = node.layer, prefix + node.layer.name
        inner = _inner(layer)
        if isinstance(inner, keras.Model):
            found += unplanned_layers(inner, name + "/")
        elif layer_kind(layer) is None and inner.weights:
            found.append((name, type(inner).__name__))
    return found


def _match_key(layer):
    return _OPS[layer_kind(layer)], tuple(_weight_shape(layer))


def float_layer_ops(layers):
    """What the worker matches in the converted graph to keep ``layers`` float: their op and weights."""
    return [{"layer": layer.name, "op": _match_key(layer)[0], "weight_shape": list(_match_key(layer)[1])}
            for layer in layers]
