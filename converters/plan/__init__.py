"""The Keras side of conversion: what each layer becomes in TFLite, and the exported graph.

`prepare` is the entry point. In the int8 modes, inference-mode BatchNormalizations are folded
into the layer that reads them (`converters.plan.batchnorm`). What each recurrent layer becomes (and the table of it) is in
`converters.plan.recurrent`; the ``SelectFeatures`` folding in `converters.plan.features`;
the fused LSTM's unit padding in `converters.plan.padding`; the traced function in
`converters.plan.export`; ``quantization="auto"``'s per-layer modes in
`converters.plan.quantization`; the input standardisation inside the file in
`converters.plan.standardize`.
"""

from converters.inputs import input_specs
from converters.plan._common import LayerPlan, clone_with
from converters.plan.batchnorm import BatchNormPlan, batch_norm_records, fold_batch_norms
from converters.plan.export import export_function, unsupported_ops
from converters.plan.features import FEATURE_SELECTIONS, fold_feature_selection
from converters.plan.padding import (
    AUTO_UNIT_MULTIPLE,
    pad_units,
    padded_units,
    resolve_unit_multiple,
)
from converters.plan.quantization import (
    auto_plan,
    float_layer_ops,
    load_cost_table,
    unplanned_layers,
)
from converters.plan.recurrent import (
    UnrolledBidirectional,
    UnrolledGRU,
    UnrolledSimpleRNN,
    plan_layer,
    recurrent_label,
)
from converters.plan.standardize import check_standardize
from tf_vib._graph import graph_nodes, rebuild
from tf_vib._keras import keras, require_tf_keras_model
from tf_vib.layers.base import is_vib_layer

__all__ = [
    "FEATURE_SELECTIONS",
    "LayerPlan",
    "BatchNormPlan",
    "fold_batch_norms",
    "fold_feature_selection",
    "pad_units",
    "padded_units",
    "resolve_unit_multiple",
    "AUTO_UNIT_MULTIPLE",
    "prepare",
    "UnrolledGRU",
    "UnrolledSimpleRNN",
    "UnrolledBidirectional",
    "export_function",
    "unsupported_ops",
    "without_masks",
    "auto_plan",
    "float_layer_ops",
    "unplanned_layers",
    "load_cost_table",
    "check_standardize",
    "file_metadata",
]


def prepare(model, *, quantization, batch_size, time_steps=None, recurrent_plan="auto",
            feature_selection="auto", unit_multiple="auto"):
    """A plain model ready to trace, its input spec, and the plan of its layers.

    VIB layers are stripped first (``tf_vib.strip_masks``); in the int8 modes (``int8``,
    ``auto``) each BatchNormalization that can be is folded into the layer reading it
    (`fold_batch_norms`; the float modes keep it: the fold saved no time there and lost
    float16 precision on an offset input, docs/deployment.md); then each ``SelectFeatures``
    gather is folded into zero kernel rows where that is cheaper
    (`fold_feature_selection`), recurrent layers get their TFLite form, and fused LSTMs
    are padded to a multiple of ``unit_multiple`` units (`pad_units`). The user's model is
    not modified: layers that need another form are rebuilt in a clone.

    Returns:
      ``(model, [tf.TensorSpec], [LayerPlan])``: one spec per input (see `input_specs`);
      the plans of the recurrent layers, then those of the ``SelectFeatures`` layers, then
      those of the padding, then those of the BatchNormalizations (`BatchNormPlan`).
    """
    multiple = resolve_unit_multiple(unit_multiple, quantization)
    model = without_masks(model)
    specs = input_specs(model, batch_size, time_steps)
    model = _with_fixed_steps(model, specs)
    model, norm_plans = fold_batch_norms(model) if quantization in ("int8", "auto") else (model, [])
    model, feature_plans = fold_feature_selection(model, feature_selection)
    plans, replacements = [], {}
    for node in graph_nodes(model):
        if recurrent_label(node.layer) is None:
            continue
        plan, replacement = plan_layer(node.layer, node, quantization in ("int8", "auto"), recurrent_plan)
        plans.append(plan)
        if replacement is not None:
            replacements[id(node.layer)] = replacement
    if replacements:
        model = clone_with(model, replacements)
    model, padding_plans = pad_units(model, multiple)
    return model, specs, plans + feature_plans + padding_plans + norm_plans


def without_masks(model):
    """``model`` with its VIB layers stripped (``tf_vib.strip_masks``), or ``model`` itself."""
    require_tf_keras_model(model, "model")
    if any(is_vib_layer(layer) or type(layer).__name__ == "FeatureMask" for layer in model.layers):
        from tf_vib.surgery import strip_masks

        return strip_masks(model)
    return model


def _with_fixed_steps(model, specs):
    """``model`` rebuilt on inputs of the specs' number of steps, where its own is None (an
    unrolled layer needs to know it)."""
    if all(None not in tensor.shape[1:] for tensor in model.inputs):
        return model
    steps = {id(tensor): spec.shape[1:] for tensor, spec in zip(model.inputs, specs, strict=True)}

    def new_input(tensor, name):
        return keras.Input(shape=tuple(steps[id(tensor)]), dtype=tensor.dtype, name=name)

    return rebuild(model, new_input=new_input)


def file_metadata(quantization_plans, standardize, unplanned=(), int8_file=True, plans=()):
    """The file's ``tf_vib`` metadata entry (read back by `converters.describe_tflite`), or None.

    Args:
      quantization_plans: the ``auto`` plan's `LayerPlan` list, or None for the other modes.
      standardize: ``(mean, std)`` from `check_standardize`, or None.
      unplanned: ``auto``: `unplanned_layers` of the model; int8_file: whether the file has
        int8 layers (then those are int8 where the quantizer can, else float32).
      plans: `prepare`'s plans; its `BatchNormPlan` ones are recorded as ``batch_normalization``.
    """
    metadata = {}
    norms = batch_norm_records(plans)
    if norms:
        metadata["batch_normalization"] = norms
    if quantization_plans is not None:
        metadata["quantization_plan"] = [
            {"layer": p.name, "kind": p.kind, "mode": p.becomes.split()[0], "why": p.becomes}
            for p in quantization_plans]
        if unplanned:
            mode = "int8 where the quantizer can" if int8_file else "float32"
            metadata["unplanned_layers"] = [{"layer": name, "kind": kind, "mode": mode} for name, kind in unplanned]
    if standardize is not None:
        metadata["input_standardization"] = {"mean": standardize[0].tolist(), "std": standardize[1].tolist()}
    return metadata or None
