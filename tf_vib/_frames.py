"""Frame pruning's graph rules: which recurrent layer gets the TimeMask, and which frames stay.

A ``TimeMask`` sits in the first recurrent layer that reads the model's frames. Stripping
it makes the model's input take only the kept frames, which is exact only when everything
between that input and the layer works frame by frame (a ``TimeDistributed`` front-end,
Dense, FeatureMask, dropout, activations, normalisation over the last axis) and nothing
else reads those frames; and when the layer reads its input forwards, one step after the
other, with no Keras mask, and returns its last state only.
"""

import dataclasses

import numpy as np

from tf_vib._graph import graph_nodes, is_model_output, tensor_users
from tf_vib._kept import force_min, mask_kept
from tf_vib._keras import keras
from tf_vib.layers.feature_mask import FeatureMask
from tf_vib.registry import RECURRENT, rule_of

__all__ = ["FrameTarget", "frame_target", "frame_masked", "kept_frames"]

_PER_FRAME = (keras.layers.TimeDistributed, keras.layers.Dense, FeatureMask, keras.layers.Dropout,
              keras.layers.GaussianNoise, keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU)
_NORMALISATION = (keras.layers.LayerNormalization, keras.layers.BatchNormalization)


@dataclasses.dataclass
class FrameTarget:
    """The recurrent layer that gets the TimeMask, and the model input whose frames it reads."""

    node: object  # the recurrent layer's call node
    input: object  # the model input tensor holding the frames
    steps: int


def _per_frame(layer):
    if isinstance(layer, _NORMALISATION):
        axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        return list(axis) in ([-1], [len(layer.input_shape) - 1])
    return isinstance(layer, _PER_FRAME)


def _refuse(model, why):
    return ValueError(
        f"`frame_masks=True` cannot prune the frames of model {model.name!r}: {why}. Accepted: a model "
        "whose first recurrent layer (LSTM, GRU or SimpleRNN; not Bidirectional, go_backwards=False, "
        "return_sequences=False, no masking) reads a fixed number of frames from a model input "
        "through per-frame layers only (TimeDistributed, Dense, dropout, activations); received "
        "frame_masks=True"
    )


def frame_target(model, masked_units, node=None):
    """Where ``add_vib_masks(frame_masks=True)`` puts the TimeMask (a ``FrameTarget``).

    Args:
      model: the user's model.
      masked_units: the names of the recurrent layers that get VIB masks (``MaskPlan.units``).
      node: the recurrent layer's call node; default: the model's first recurrent layer's.

    Raises:
      ValueError: the frames cannot be pruned exactly; the message says why.
    """
    if node is None:
        node = next((n for n in graph_nodes(model) if rule_of(n.layer).role == RECURRENT), None)
    if node is None:
        raise _refuse(model, "it has no recurrent layer, so no time axis to prune")
    layer = node.layer
    if isinstance(layer, keras.layers.Bidirectional):
        raise _refuse(model, f"its first recurrent layer {layer.name!r} is Bidirectional (its backward "
                       "direction reads the frames in reverse)")
    for flag in ("go_backwards", "return_sequences", "time_major"):
        if getattr(layer, flag, False):
            raise _refuse(model, f"its first recurrent layer {layer.name!r} has {flag}=True"
                           + (" (its per-step outputs cannot skip steps)" if flag == "return_sequences" else ""))
    if "mask" in node.call_kwargs or getattr(node.keras_inputs[0], "_keras_mask", None) is not None:
        raise _refuse(model, f"its first recurrent layer {layer.name!r} reads a Keras mask (masking)")
    if layer.name not in masked_units:
        raise _refuse(model, f"its first recurrent layer {layer.name!r} gets no VIB masks "
                       "(see tf_vib.mask_plan for why)")
    steps = node.keras_inputs[0].shape[1]
    if steps is None:
        raise _refuse(model, f"the time axis of layer {layer.name!r}'s input has no fixed length "
                       f"(input shape {tuple(node.keras_inputs[0].shape)}); build the model with a fixed T")
    users, tensor = tensor_users(model), node.keras_inputs[0]
    reader = node
    while True:
        readers = users.get(id(tensor), [])
        if len(readers) != 1 or readers[0] is not reader or is_model_output(model, tensor):
            raise _refuse(model, f"the frames on the way to layer {layer.name!r} are also read elsewhere")
        history = tensor._keras_history
        source = history.layer
        if isinstance(source, keras.layers.InputLayer):
            return FrameTarget(node, tensor, int(steps))
        producer = source._inbound_nodes[history.node_index]
        if not _per_frame(source) or len(producer.keras_inputs) != 1:
            raise _refuse(model, f"layer {source.name!r} ({type(source).__name__}) between the input and "
                           f"layer {layer.name!r} is not a per-frame layer")
        reader, tensor = producer, producer.keras_inputs[0]


def frame_masked(model):
    """The target of a model with a TimeMask (a ``FrameTarget``), or None."""
    for node in graph_nodes(model):
        if getattr(getattr(node.layer, "cell", None), "time_mask", None) is not None:
            return frame_target(model, {node.layer.name}, node)
    return None


def kept_frames(model, *, threshold=None, min_units=0):
    """The frame positions a model's TimeMask keeps: ``{"kept": [...], "of": T}``, or None
    for a model without one. ``threshold`` and ``min_units`` as in ``strip_masks`` (at least
    ``min_units`` frames stay, the most informative ones; with 0, none kept raises)."""
    target = frame_masked(model)
    if target is None:
        return None
    mask = target.node.layer.cell.time_mask
    kept, log_alpha = mask_kept(mask, threshold)
    kept = force_min(kept, log_alpha, min_units, target.node.layer.name, "frames")
    return {"kept": np.flatnonzero(kept).tolist(), "of": int(mask.units)}
