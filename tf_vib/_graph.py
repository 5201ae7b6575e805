"""Walking and rebuilding a tf_keras functional graph: the one graph walk tf-vib has.

``rebuild(model, replace)`` makes a new model node by node. Every call is repeated with
the arguments the user's model was built with (positional, keyword, non-tensor values,
``initial_state``, ``mask``, ``training``), shared layers stay shared, nested models are
cloned with their weights, and the inputs keep their names, shapes and dtypes; the
inputs and outputs keep their structure (a single tensor, a list or a dict). A
``replace`` callback may build any node differently: wrapping (VIB layers in), stripping
(VIB layers out) and low rank are such callbacks.
"""

import collections
import dataclasses

from tf_vib._keras import keras, tf

__all__ = ["graph_nodes", "as_list", "node_outputs", "tensor_users", "rebuild", "NodeCall", "copy_layer",
           "is_model_output", "is_keras_tensor", "call_counts"]


def graph_nodes(model):
    """The model's call nodes in topological order, without its input layers."""
    for depth in sorted(model._nodes_by_depth, reverse=True):
        yield from (n for n in model._nodes_by_depth[depth] if not n.is_input)


def as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def node_outputs(node):
    return as_list(node.outputs)


def tensor_users(model):
    """``{id(tensor): [node, ...]}``: the call nodes of ``model`` that take each tensor."""
    users = {}
    for node in graph_nodes(model):
        for tensor in node.keras_inputs:
            users.setdefault(id(tensor), []).append(node)
    return users


def call_counts(model):
    """``{id(layer): calls}`` in ``model``'s own graph (a layer reused by another model, as a
    stripped Sequential's are, is counted here only for this one)."""
    return collections.Counter(id(node.layer) for node in graph_nodes(model))


def is_model_output(model, tensor):
    return any(tensor is t for t in model.outputs)


def copy_layer(layer):
    """A new, unbuilt layer with ``layer``'s config (a nested model: a clone)."""
    if isinstance(layer, keras.Model):
        return keras.models.clone_model(layer)
    return type(layer).from_config(layer.get_config())


def is_keras_tensor(value):
    """True for a symbolic Keras tensor (``keras.backend.is_keras_tensor`` raises on other objects)."""
    return getattr(value, "_keras_history", None) is not None


@dataclasses.dataclass
class NodeCall:
    """One node of the model being rebuilt, as ``replace`` sees it.

    ``args`` and ``kwargs`` are the node's call arguments with every Keras tensor already
    replaced by its counterpart in the new model; ``inputs`` are the new tensors among
    them, in the order of ``node.keras_inputs``.
    """

    node: object
    args: tuple
    kwargs: dict
    inputs: list

    @property
    def layer(self):
        return self.node.layer

    def call(self, layer, *, first=None):
        """Call ``layer`` with this node's arguments (the first positional one replaced by
        ``first`` when given)."""
        args = self.args if first is None else (first, *self.args[1:])
        return layer(*args, **self.kwargs)


def rebuild(model, replace=None, *, new_input=None, name=None):
    """A new model with the same graph as ``model``, node by node.

    Args:
      model: a built Sequential or functional tf_keras model.
      replace: ``replace(call: NodeCall) -> outputs or None``. Outputs must have the
        structure of ``call.node.outputs``; None builds the node as a copy of its layer
        with the original weights (a layer called at several nodes is copied once).
      new_input: ``new_input(tensor, name) -> keras.Input or None``, to change an input.
      name: the new model's name; default ``model.name``.

    Returns:
      The new model: a Sequential if ``model`` is one and the result is still a chain of
      single-input layers, else a functional model.
    """
    tensors = {}
    copies = {}
    inputs = []
    for tensor, input_name in zip(model.inputs, model.input_names, strict=True):
        new = new_input(tensor, input_name) if new_input is not None else None
        if new is None:
            new = keras.Input(batch_size=tensor.shape[0], shape=tuple(tensor.shape[1:]), dtype=tensor.dtype,
                              name=input_name)
        tensors[id(tensor)] = new
        inputs.append(new)

    def mapped(value):
        return tensors[id(value)] if is_keras_tensor(value) else value

    for node in graph_nodes(model):
        args = tf.nest.map_structure(mapped, tuple(node.call_args))
        kwargs = {k: tf.nest.map_structure(mapped, v) for k, v in node.call_kwargs.items()}
        call = NodeCall(node, args, kwargs, [tensors[id(t)] for t in node.keras_inputs])
        outputs = replace(call) if replace is not None else None
        if outputs is None:
            outputs = _copy_call(call, copies)
        for original, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs), strict=True):
            tensors[id(original)] = new
    new_inputs = _restructure(model._nested_inputs, model.inputs, inputs)
    new_outputs = tf.nest.map_structure(lambda t: tensors[id(t)], model._nested_outputs)
    functional = keras.Model(new_inputs, new_outputs, name=name or model.name)
    if isinstance(model, keras.Sequential) and _is_chain(functional):
        spec = inputs[0]
        return keras.Sequential(
            [keras.Input(batch_size=spec.shape[0], shape=tuple(spec.shape[1:]), dtype=spec.dtype,
                         name=spec.name)] + functional.layers[1:],
            name=functional.name,
        )
    return functional


def _restructure(nested, flat_old, flat_new):
    by_id = {id(old): new for old, new in zip(flat_old, flat_new, strict=True)}
    return tf.nest.map_structure(lambda t: by_id[id(t)], nested)


def _is_chain(model):
    nodes = list(graph_nodes(model))
    return (len(model.inputs) == 1 and len(model.outputs) == 1
            and all(len(n.keras_inputs) == 1 and len(n.layer._inbound_nodes) == 1 for n in nodes)
            and len(nodes) == len(model.layers) - 1)


def _copy_call(call, copies):
    layer = call.layer
    new_layer = copies.get(id(layer))
    fresh = new_layer is None
    if fresh:
        new_layer = copy_layer(layer)
        copies[id(layer)] = new_layer
    outputs = call.call(new_layer)
    if fresh:
        new_layer.set_weights(layer.get_weights())
    return outputs
