"""add_vib_masks: a copy of a trained model with VIB layers in place of LSTM, GRU and Dense.

Each ``LSTM``/``GRU`` becomes ``RNN(VIBLSTMCell|VIBGRUCell)`` with the trained weights,
a ``FeatureMask`` goes in front of the first recurrent layer of each chain (on the
features it reads), and a ``FeatureMask`` after each hidden ``Dense``. With the masks'
means at exactly 1 (the warm start), the copy reproduces the original's predictions.
"""

from tf_vib._graph import as_list, graph_nodes, node_outputs
from tf_vib._keras import keras, require_tf_keras_model
from tf_vib.layers.feature_mask import FeatureMask
from tf_vib.layers.recurrent import VIBRNN
from tf_vib.layers.vib_gru import VIBGRUCell
from tf_vib.layers.vib_lstm import VIBLSTMCell

__all__ = ["add_vib_masks", "recurrent_kind"]

_WARM_MU = {"class_name": "Constant", "config": {"value": 1.0}}


def recurrent_kind(layer):
    """``"lstm"``, ``"gru"`` or None, for the plain Keras layers tf-vib can wrap."""
    if type(layer) is keras.layers.LSTM:
        return "lstm"
    if type(layer) is keras.layers.GRU:
        return "gru"
    if type(layer) is keras.layers.RNN:
        if type(layer.cell) is keras.layers.LSTMCell:
            return "lstm"
        if type(layer.cell) is keras.layers.GRUCell:
            return "gru"
    return None


def _vib_recurrent(layer, kind, mask_kwargs, masked_gates):
    cell = layer.cell
    if layer.return_state or layer.stateful:
        raise ValueError(
            f"layer {layer.name!r} has return_state=True or stateful=True, which tf-vib cannot "
            "compress exactly; use a plain recurrent layer with a zero initial state"
        )
    common = dict(
        activation=cell.activation,
        recurrent_activation=cell.recurrent_activation,
        use_bias=cell.use_bias,
        kernel_regularizer=cell.kernel_regularizer,
        recurrent_regularizer=cell.recurrent_regularizer,
        bias_regularizer=cell.bias_regularizer,
        kernel_constraint=cell.kernel_constraint,
        recurrent_constraint=cell.recurrent_constraint,
        bias_constraint=cell.bias_constraint,
        **mask_kwargs,
    )
    gates = masked_gates.get(kind) if isinstance(masked_gates, dict) else masked_gates
    if kind == "lstm":
        new_cell = VIBLSTMCell(cell.units, masked_gates=gates, **common)
    else:
        new_cell = VIBGRUCell(cell.units, masked_gates=gates, reset_after=cell.reset_after, **common)
    return VIBRNN(
        new_cell,
        return_sequences=layer.return_sequences,
        go_backwards=layer.go_backwards,
        unroll=layer.unroll,
        time_major=layer.time_major,
        name=layer.name,
    )


def _copy_layer(layer):
    if isinstance(layer, keras.Model):
        return keras.models.clone_model(layer)
    return type(layer).from_config(layer.get_config())


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
):
    """A new model with VIB layers in place of the recurrent layers and after hidden Dense.

    Args:
      model: a trained Sequential or functional tf_keras model. It is not modified.
      kl_factor: float, the KL weight of every mask (``MaskSettings.kl_factor``).
      input_kl_mult, hidden_kl_mult, dense_kl_mult: float, ``kl_mult`` of the FeatureMask on
        recurrent inputs, of the recurrent gate masks, and of the masks after hidden Dense.
      masked_gates: str or None, the gates the recurrent masks sit on (``"ifco"``/``"zrh"``
        by default); a dict ``{"lstm": ..., "gru": ...}`` sets them per kind.
      feature_masks: put a FeatureMask in front of the first recurrent layer of each chain.
      dense_masks: put a FeatureMask after each Dense whose output is not a model output.
      warm_start: start every mask mean at exactly 1, so the copy predicts as the original.

    Returns:
      The VIB model (a Sequential if ``model`` is one). Its weights are the original's.
    """
    require_tf_keras_model(model, "model")
    mu = {"mu_initializer": _WARM_MU} if warm_start else {}
    recurrent_nodes = [n for n in graph_nodes(model) if recurrent_kind(n.layer)]
    dense_nodes = [n for n in graph_nodes(model) if type(n.layer) is keras.layers.Dense]
    if not recurrent_nodes and not dense_nodes:
        raise ValueError(
            f"`model` {model.name!r} has no LSTM, GRU or Dense layer for tf-vib to compress; "
            f"its layers are {[type(layer).__name__ for layer in model.layers]}"
        )
    output_ids = {id(t) for t in model.outputs}
    recurrent_outputs = {id(t) for node in recurrent_nodes for t in node_outputs(node)}
    tensors = {}
    new_inputs = []
    for tensor, name in zip(model.inputs, model.input_names, strict=True):
        new = keras.Input(
            batch_size=tensor.shape[0], shape=tuple(tensor.shape[1:]), dtype=tensor.dtype, name=name
        )
        tensors[id(tensor)] = new
        new_inputs.append(new)
    built = {}
    for node in graph_nodes(model):
        layer = node.layer
        inputs = [tensors[id(t)] for t in node.keras_inputs]
        kind = recurrent_kind(layer)
        if kind:
            x = inputs[0]
            if feature_masks and id(node.keras_inputs[0]) not in recurrent_outputs:
                x = FeatureMask(name=f"{layer.name}_input_mask", kl_factor=kl_factor,
                                kl_mult=input_kl_mult, **mu)(x)
            new_layer = _vib_recurrent(layer, kind, dict(kl_factor=kl_factor, kl_mult=hidden_kl_mult, **mu),
                                       masked_gates)
            output = new_layer(x)
            cell = new_layer.cell
            for name in ("kernel", "recurrent_kernel", "bias"):
                if getattr(cell, name, None) is not None:
                    getattr(cell, name).assign(getattr(layer.cell, name))
        else:
            new_layer = built.get(id(layer)) or _copy_layer(layer)
            output = new_layer(inputs[0] if len(inputs) == 1 else inputs)
            if id(layer) not in built:
                new_layer.set_weights(layer.get_weights())
                built[id(layer)] = new_layer
            out_ids = [id(t) for t in node_outputs(node)]
            if (dense_masks and type(layer) is keras.layers.Dense
                    and not any(i in output_ids for i in out_ids)):
                output = FeatureMask(name=f"{layer.name}_mask", kl_factor=kl_factor,
                                     kl_mult=dense_kl_mult, **mu)(output)
        for original, new in zip(node_outputs(node), as_list(output), strict=True):
            tensors[id(original)] = new
    outputs = [tensors[id(t)] for t in model.outputs]
    functional = keras.Model(new_inputs, outputs if len(outputs) > 1 else outputs[0], name=f"{model.name}_vib")
    if not isinstance(model, keras.Sequential):
        return functional
    return keras.Sequential(
        [keras.Input(batch_size=new_inputs[0].shape[0], shape=tuple(new_inputs[0].shape[1:]))]
        + functional.layers[1:],
        name=functional.name,
    )

