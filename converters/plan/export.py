"""The prepared model as a fixed-signature function, and the ops TFLite cannot run."""

from converters.inputs import output_names
from tf_vib._keras import tf

__all__ = ["export_function", "unsupported_ops"]

#: TensorFlow ops that TFLite cannot run at all (they call back into Python).
_PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


def export_function(model, specs, standardize=None, names=None):
    """The model's inference as a ``tf.function`` with a fixed input signature.

    Its outputs are a dict by ``names`` (default `output_names`); the worker puts the file's inputs and
    outputs in the Keras model's order. ``standardize``, ``(mean, std)`` from
    `converters.plan.standardize.check_standardize`, makes the function take raw inputs.
    """
    names, structure = names or output_names(model), model.input

    def call(*inputs):
        if standardize is not None:
            # A multiply by 1/std, not a divide: TFLite's DIV has no int8 kernel.
            inputs = ((inputs[0] - standardize[0]) * (1.0 / standardize[1]),)
        nested = inputs[0] if len(inputs) == 1 else tf.nest.pack_sequence_as(structure, list(inputs))
        outputs = tf.nest.flatten(model(nested, training=False))
        return dict(zip(names, outputs, strict=True))

    return tf.function(call, input_signature=list(specs))


def unsupported_ops(function, model):
    """``[(op type, layer name)]`` for the ops of ``function`` that TFLite cannot run."""
    graph = function.get_concrete_function().graph
    found = []
    defs = [graph.as_graph_def()]
    nodes = [n for g in defs for n in g.node] + [
        n for g in defs for f in g.library.function for n in f.node_def
    ]
    layer_names = {layer.name for layer in model.layers}
    for node in nodes:
        if node.op in _PYTHON_OPS:
            parts = node.name.split("/")
            layer = next((p for p in parts if p in layer_names), parts[0])
            found.append((node.op, layer))
    return found
