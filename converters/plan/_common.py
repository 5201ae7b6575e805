"""What the plan modules share: the plan record, and the checks and rebuild they all use."""

import dataclasses

from tf_vib._graph import rebuild
from tf_vib._keras import keras

__all__ = ["LayerPlan", "has_input_mask", "one_kernel_consumer", "clone_with", "SKIP"]

#: A `clone_with` replacement that leaves the layer out: its node's input passes through.
SKIP = object()


@dataclasses.dataclass
class LayerPlan:
    """What one recurrent layer becomes in the TFLite file."""

    name: str
    kind: str
    becomes: str

    def __str__(self):
        return f"{self.name} ({self.kind}) -> {self.becomes}"


def has_input_mask(node):
    return any(getattr(t, "_keras_mask", None) is not None for t in node.keras_inputs)


def _kernel_rows_are_features(layer):
    """True for layers whose first weight is a kernel with one row per input feature."""
    if type(layer) in (keras.layers.Dense, keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN):
        return True
    return type(layer) is keras.layers.RNN and type(layer.cell) in (
        keras.layers.LSTMCell, keras.layers.GRUCell, keras.layers.SimpleRNNCell)


def one_kernel_consumer(node, users, model, calls, accepts=_kernel_rows_are_features):
    """Why the output of ``node`` is not the sole input of one kernel layer (Dense, LSTM,
    GRU, SimpleRNN; ``accepts(layer)`` says which) whose kernel rows can change, or None if it is.

    ``calls`` counts the nodes of each layer in this model's graph (a stripped Sequential
    reuses layers that were called once more to build it, so the layers' own node lists
    are longer than one).
    """
    if any(node.outputs is t for t in model.outputs):
        return "its output is a model output"
    if len(users) != 1:
        return f"its output feeds {len(users)} layers"
    consumer = users[0].layer
    if not accepts(consumer):
        return f"it feeds a {type(consumer).__name__}"
    if len(users[0].keras_inputs) != 1:
        return f"{consumer.name!r} is called with more than one input"
    if set(users[0].call_kwargs) - {"training", "mask"}:
        return f"{consumer.name!r} is called with {sorted(set(users[0].call_kwargs) - {'training', 'mask'})}"
    if calls[id(node.layer)] != 1 or calls[id(consumer)] != 1:
        return "a layer is shared"
    return None


def clone_with(model, replacements):
    """``model`` rebuilt (`tf_vib._graph.rebuild`) with the layers of ``replacements``
    (``{id(layer): new layer}``, weights in ``new._tf_vib_weights`` where they change; `SKIP`:
    the layer is left out, its one input taking its place)."""
    def replace(call):
        new = replacements.get(id(call.layer))
        if new is None:
            return None
        if new is SKIP:
            return call.inputs[0]
        outputs = call.call(new)
        if hasattr(new, "_tf_vib_weights"):
            new.set_weights(new._tf_vib_weights)
        return outputs

    return rebuild(model, replace)
