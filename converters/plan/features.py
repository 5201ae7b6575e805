"""A stripped model's ``SelectFeatures`` gather, folded into zero rows of the next kernel."""

import numpy as np

from converters.plan._common import LayerPlan, clone_with, one_kernel_consumer
from tf_vib._graph import call_counts, graph_nodes, tensor_users
from tf_vib._keras import keras

__all__ = ["FEATURE_SELECTIONS", "FOLD_MAX_EXTRA_WEIGHTS", "FOLD_MAX_GROWTH", "fold_feature_selection"]

#: What a ``SelectFeatures`` gather (the kept input features of a stripped model) becomes:
#: ``auto`` folds it into zero rows of the next layer's kernel when that is cheap (see
#: `fold_feature_selection`), ``gather`` always keeps the GATHER op, ``zero_rows`` always folds
#: (and raises where it cannot).
FEATURE_SELECTIONS = ("auto", "gather", "zero_rows")
#: ``auto`` folds when the zero rows add at most this many weights ...
FOLD_MAX_EXTRA_WEIGHTS = 256
#: ... and at most this share of the kernel they are added to.
FOLD_MAX_GROWTH = 0.25


def fold_feature_selection(model, feature_selection="auto"):
    """The model with each ``SelectFeatures`` gather folded into the next layer's kernel.

    ``strip_masks`` keeps a model's input signature by putting a ``SelectFeatures``
    (a TFLite ``GATHER``) before the first layer when a FeatureMask removed input
    features. The same model without the gather, its next layer's kernel holding a zero
    row for each removed feature, computes the same outputs as long as the removed
    features hold finite values: zero times NaN or infinity is NaN, where the gather
    ignored them. Use ``"gather"`` if removed inputs may carry NaN (an unplugged sensor). Which one is faster is a
    trade: the GATHER costs a fixed time per invoke, while the zero rows add ``removed
    features x kernel columns`` multiplications per step and as many weights to the file
    (both timed in docs/deployment.md, "What each layer becomes"). ``auto`` therefore
    folds only when the zero rows add at most `FOLD_MAX_EXTRA_WEIGHTS` weights and at most
    `FOLD_MAX_GROWTH` of the kernel.

    Args:
      model: a plain tf_keras model; it is not modified.
      feature_selection: one of `FEATURE_SELECTIONS`.

    Returns:
      ``(model, [LayerPlan])``: the model (the same object if nothing was folded) and one
      plan per ``SelectFeatures`` layer saying what it became.
    """
    from tf_vib.layers.select_features import SelectFeatures

    if feature_selection not in FEATURE_SELECTIONS:
        raise ValueError(f"`feature_selection` must be one of {list(FEATURE_SELECTIONS)}; "
                         f"received {feature_selection!r}")
    nodes = list(graph_nodes(model))
    users = tensor_users(model)
    calls = call_counts(model)
    plans, replacements = [], {}
    for node in nodes:
        layer = node.layer
        if not isinstance(layer, SelectFeatures):
            continue
        consumers = users.get(id(node.outputs), [])
        why = one_kernel_consumer(node, consumers, model, calls)
        total = node.keras_inputs[0].shape[-1] if node.keras_inputs else None
        if why is None and total is None:
            why = "its input's feature count is unknown"
        if why is None:
            consumer = consumers[0].layer
            weights = consumer.get_weights()
            kernel = weights[0]
            extra = (int(total) - kernel.shape[0]) * kernel.shape[1]
            cheap = extra <= min(FOLD_MAX_EXTRA_WEIGHTS, FOLD_MAX_GROWTH * kernel.size)
            if feature_selection == "gather" or (feature_selection == "auto" and not cheap):
                why = (f"zero rows would add {extra:,} weights to {consumer.name!r}"
                       if feature_selection == "auto" else "feature_selection='gather'")
        if why is not None:
            if feature_selection == "zero_rows":
                raise ValueError(f"feature_selection='zero_rows' cannot fold {layer.name!r}: {why}; "
                                 "use 'auto' or 'gather'")
            plans.append(LayerPlan(layer.name, "SelectFeatures", f"GATHER ({why})"))
            continue
        full = np.zeros((int(total), kernel.shape[1]), kernel.dtype)
        full[np.asarray(layer.indices)] = kernel
        folded = type(consumer).from_config(consumer.get_config())
        folded._tf_vib_weights = [full] + weights[1:]
        replacements[id(consumer)] = folded
        replacements[id(layer)] = keras.layers.Activation("linear", name=layer.name)
        plans.append(LayerPlan(layer.name, "SelectFeatures",
                               f"zero rows in {consumer.name!r} (+{extra:,} weights, no GATHER)"))
    return (clone_with(model, replacements) if replacements else model), plans
