"""The bridge's graph walk: a model rebuilt in the other Keras, call by call (no Keras import).

``Converter(source, target, ...).model(model)`` takes the two Keras modules; it reads Keras 3
nodes (``operation``, ``arguments``) and tf_keras nodes (``layer``, ``call_args``) alike.
"""

from tf_vib._bridge_config import SUPPORTED, layer_from_config, unsupported_layers

__all__ = ["Converter"]


class Converter:
    """One conversion: the layers built so far (shared layers stay shared) and weight pairs."""

    def __init__(self, source, target, *, to_keras3, extra):
        self.source, self.target, self.to_keras3, self.extra = source, target, to_keras3, extra
        self.built = {}
        self.pairs = []

    def model(self, model):
        self._refuse_unmapped(model)
        new = self._model(model)
        for old_layer, new_layer in self.pairs:
            new_layer.set_weights(old_layer.get_weights())
        return new

    def _refuse_unmapped(self, model):
        layers = list(_leaf_layers(model, self.source))
        bad = unsupported_layers(
            [layer for layer in layers if type(layer).__name__ not in self.extra], self.source)
        bad += [(op.name, f"keras.ops {type(op).__name__} outside any layer")
                for op in _bare_operations(model, self.source)]
        if bad:
            listed = ", ".join(f"{name!r} ({kind})" for name, kind in bad)
            raise ValueError(
                f"The Keras bridge cannot map layer {listed} of model {model.name!r}; it maps "
                f"Sequential and functional models of these layers: {', '.join(SUPPORTED)}"
            )

    def _layer(self, layer):
        if id(layer) in self.built:
            return self.built[id(layer)]
        if isinstance(layer, self.source.Model):
            new = self._model(layer)
        else:
            new = layer_from_config(
                type(layer).__name__, layer.get_config(), source=self.source, target=self.target,
                to_keras3=self.to_keras3, extra=self.extra,
                rank=_input_rank(layer))
            self.pairs.append((layer, new))
        self.built[id(layer)] = new
        return new

    def _input(self, tensor):
        history = tensor._keras_history
        owner = history.operation if hasattr(history, "operation") else history.layer
        dtype = getattr(tensor.dtype, "name", tensor.dtype)
        return self.target.Input(batch_shape=tuple(tensor.shape), dtype=dtype, name=owner.name,
                                 sparse=getattr(tensor, "sparse", False) or None)

    def _model(self, model):
        if isinstance(model, self.source.Sequential):
            layers = [self._layer(layer) for layer in model.layers]
            if _has_inputs(model):
                layers.insert(0, self._input(model.inputs[0]))
            return self.target.Sequential(layers, name=model.name)
        tensors = {}
        inputs = _map(_inputs_struct(model), lambda t: tensors.setdefault(id(t), self._input(t)))
        for node in _call_nodes(model):
            operation = node.operation if hasattr(node, "operation") else node.layer
            if not isinstance(operation, self.source.layers.Layer):
                continue  # a Keras 3 mask computation, which tf_keras makes itself
            args, kwargs = _node_arguments(node)
            args = _map(args, lambda t: tensors[id(t)])
            kwargs = _map(kwargs, lambda t: tensors[id(t)])
            outputs = self._layer(operation)(*args, **kwargs)
            for old, new in zip(_flatten(node.outputs), _flatten(outputs), strict=True):
                tensors[id(old)] = new
        outputs = _map(_outputs_struct(model), lambda t: tensors[id(t)])
        return self.target.Model(inputs, outputs, name=model.name)


def _input_rank(layer):
    """The rank of a built tf_keras layer's (first) input, or None."""
    shape = getattr(layer, "_build_input_shape", None)
    try:
        return len(shape) if shape is not None and not isinstance(shape, (list, dict)) else None
    except (TypeError, ValueError):  # an unknown-rank TensorShape
        return None


def _has_inputs(model):
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def _inputs_struct(model):
    return model._inputs_struct if hasattr(model, "_inputs_struct") else model._nested_inputs


def _outputs_struct(model):
    return model._outputs_struct if hasattr(model, "_outputs_struct") else model._nested_outputs


def _call_nodes(model):
    for depth in sorted(model._nodes_by_depth, reverse=True):
        yield from (n for n in model._nodes_by_depth[depth] if not n.is_input)


def _node_arguments(node):
    """A call's arguments as the user gave them: Keras 3 records the call context's
    ``training`` (overridden at every call) and the mask it propagates itself."""
    if not hasattr(node, "arguments"):
        return list(node.call_args), dict(node.call_kwargs)
    args, kwargs = list(node.arguments.args), dict(node.arguments.kwargs)
    kwargs.pop("training", None)
    first = _flatten(args[0]) if args else []
    implicit = [getattr(t, "_keras_mask", None) for t in first]
    mask = kwargs.get("mask")
    if mask is not None and [id(m) for m in _flatten(mask)] == [id(m) for m in implicit]:
        del kwargs["mask"]
    return args, kwargs


def _bare_operations(model, source):
    """Keras 3 operations outside any layer (``x + 1`` on a Keras tensor) that the model's
    layers or outputs read; its own mask computations are left out."""
    nested = [op for layer in model.layers if isinstance(layer, source.Model)
              for op in _bare_operations(layer, source)]
    if isinstance(model, source.Sequential) or not hasattr(model, "operations"):
        return nested
    used = {id(t) for t in _flatten(_outputs_struct(model))}
    for node in _call_nodes(model):
        if not isinstance(node.operation, source.layers.Layer):
            continue
        args, kwargs = _node_arguments(node)
        used |= {id(t) for t in _flatten([args, kwargs]) if _is_tensor(t)}
    return nested + [node.operation for node in _call_nodes(model)
            if not isinstance(node.operation, source.layers.Layer)
            and any(id(t) in used for t in node.outputs)]


def _is_tensor(value):
    return hasattr(value, "_keras_history")


def _map(value, fn):
    """``value`` with each Keras tensor in its lists, tuples and dicts replaced by ``fn(tensor)``."""
    if _is_tensor(value):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_map(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    return value


def _flatten(value):
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flatten(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _flatten(v)]
    return [value]


def _leaf_layers(model, source):
    """Every layer of ``model``, nested models' layers included (InputLayers left out)."""
    for layer in model.layers:
        if isinstance(layer, source.Model):
            yield from _leaf_layers(layer, source)
        elif type(layer).__name__ != "InputLayer":
            yield layer
