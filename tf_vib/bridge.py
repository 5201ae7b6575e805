"""Keras 3 models in and out of tf-vib: the one module that imports Keras 3.

tf-vib works in tf_keras (tfmot accepts nothing else), while ``import keras`` in TF 2.21 is
Keras 3. The bridge rebuilds a model in the other Keras layer by layer, through each layer's
config (``tf_vib._bridge_config``) and weights (``get_weights``/``set_weights``, which both
Keras order alike), walking the functional graph call by call, so nested models, shared
layers, several inputs and outputs and the calls' keyword arguments come across as they were.
Keras 3 is imported only when a function here needs it.

``load_model``/``save_model`` read and write model files of either Keras.
"""

import functools
import json
import os
import zipfile

from tf_vib import _bridge_config
from tf_vib._keras import keras as tf_keras

__all__ = ["is_keras3", "to_tf_keras", "to_keras3", "to_internal", "load_model", "save_model",
           "SUPPORTED"]

SUPPORTED = _bridge_config.SUPPORTED


def _keras3():
    import keras

    return keras


def is_keras3(model):
    """Whether ``model`` is a Keras 3 model (checked without importing Keras 3)."""
    module = type(model).__module__ or ""
    if not module.startswith("keras"):
        return False
    return isinstance(model, _keras3().Model)


def to_tf_keras(model):
    """An equivalent tf_keras model of a Keras 3 Sequential or functional model.

    Args:
      model: a Keras 3 ``Sequential`` or functional ``Model`` (nested models allowed), built.

    Returns:
      A new tf_keras model with the same layers, configs, weights and outputs.

    Raises:
      TypeError: ``model`` is not a Keras 3 Sequential or functional model.
      ValueError: a layer the bridge cannot map (raised before anything is built).
    """
    if not is_keras3(model):
        raise TypeError(f"`model` must be a Keras 3 model; received {type(model).__module__}."
                        f"{type(model).__name__}")
    return _Converter(_keras3(), tf_keras, to_keras3=False).model(model)


def to_keras3(model):
    """An equivalent Keras 3 model of a tf_keras Sequential or functional model.

    Args:
      model: a tf_keras ``Sequential`` or functional ``Model`` (nested models allowed), built.

    Returns:
      A new Keras 3 model with the same layers, configs, weights and outputs.

    Raises:
      TypeError: ``model`` is not a tf_keras model.
      ValueError: a layer the bridge cannot map (raised before anything is built).
    """
    if not isinstance(model, tf_keras.Model):
        raise TypeError(f"`model` must be a tf_keras model; received {type(model).__module__}."
                        f"{type(model).__name__}")
    return _Converter(tf_keras, _keras3(), to_keras3=True).model(model)


def to_internal(model, argument="model"):
    """``(tf_keras_model, back)`` for an entry point that takes either Keras.

    ``back(result)`` hands a tf_keras result back in the user's Keras: the identity for a
    tf_keras ``model``, ``to_keras3`` for a Keras 3 one. Anything else is returned as it is
    for the entry point's own check to refuse.
    """
    if isinstance(model, tf_keras.Model) or not is_keras3(model):
        return model, _identity
    try:
        return to_tf_keras(model), to_keras3
    except ValueError as error:
        raise ValueError(f"`{argument}`: {error}") from None


def _identity(result):
    return result


class _Converter:
    """One conversion: the layers built so far (shared layers stay shared) and weight pairs."""

    def __init__(self, source, target, *, to_keras3):
        self.source, self.target, self.to_keras3 = source, target, to_keras3
        self.built = {}
        self.pairs = []
        self.extra = _tf_vib_layers() if to_keras3 else _tf_vib_layers(reverse=True)

    def model(self, model):
        self._refuse_unmapped(model)
        new = self._model(model)
        for old_layer, new_layer in self.pairs:
            new_layer.set_weights(old_layer.get_weights())
        return new

    def _refuse_unmapped(self, model):
        layers = list(_leaf_layers(model, self.source))
        bad = _bridge_config.unsupported_layers(
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
            new = _bridge_config.layer_from_config(
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


def _tf_vib_layers(reverse=False):
    """tf-vib's own layers a stripped model may hold: ``{name: (source class, target class)}``
    from tf_keras to Keras 3 (``reverse``: the other way)."""
    from tf_vib.layers import SelectFeatures

    pair = (SelectFeatures, _keras3_select_features())
    return {"SelectFeatures": pair[::-1] if reverse else pair}


@functools.cache
def _keras3_select_features():
    """The Keras 3 twin of ``tf_vib.layers.SelectFeatures`` (registered under the same name,
    so a Keras 3 ``.keras`` file of a stripped model loads once the bridge is imported)."""
    keras = _keras3()

    @keras.saving.register_keras_serializable(package="tf_vib")
    class SelectFeatures(keras.layers.Layer):
        """Gather ``indices`` (sorted, distinct ints) from the last axis of the input."""

        def __init__(self, indices, **kwargs):
            super().__init__(**kwargs)
            self.indices = [int(i) for i in indices]
            self.supports_masking = True

        def call(self, inputs):
            return keras.ops.take(inputs, self.indices, axis=-1)

        def compute_output_shape(self, input_shape):
            return (*input_shape[:-1], len(self.indices))

        def get_config(self):
            return {**super().get_config(), "indices": list(self.indices)}

    return SelectFeatures


def load_model(path, *, safe_mode=True):
    """Load a model file written by either Keras, in the Keras that wrote it.

    Args:
      path: a ``.keras`` file (Keras 3 or tf_keras, told apart by its metadata), an ``.h5``
        file, or a SavedModel directory written by tf_keras.
      safe_mode: bool. True (the default) refuses files whose Lambda layers would run their
        stored Python code, as Keras's own safe mode does; ``.h5`` and SavedModel files,
        which Keras loads without that check, are refused the same way here.

    Returns:
      The model: a Keras 3 model for a file Keras 3 wrote, a tf_keras model otherwise.

    Raises:
      FileNotFoundError, ValueError: naming ``path`` and why it cannot be loaded.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"`path` {path!r} does not exist; pass a .keras file, an .h5 "
                                "file or a SavedModel directory")
    if os.path.isdir(path):
        loader = _load_saved_model
    elif path.endswith(".keras"):
        loader = _load_keras_zip
    elif path.endswith((".h5", ".hdf5")):
        loader = _load_h5
    else:
        raise ValueError(f"`path` {path!r} is not a model file tf-vib reads: pass a .keras file, "
                     "an .h5 file or a SavedModel directory")
    try:
        return loader(path, safe_mode=safe_mode)
    except (ValueError, TypeError) as error:
        if path in str(error):
            raise
        raise ValueError(f"Cannot load {path!r}: {error}") from error


def save_model(model, path):
    """Save ``model`` with its own Keras, in the format ``path``'s extension names.

    Args:
      model: a tf_keras or Keras 3 model.
      path: ``*.keras`` or ``*.h5`` for either Keras; any other path is a SavedModel directory,
        which only tf_keras writes with its layer graph (Keras 3's ``export()`` drops it).
    """
    path = os.fspath(path)
    keras3 = is_keras3(model)
    if not keras3 and not isinstance(model, tf_keras.Model):
        raise TypeError(f"`model` must be a tf_keras or Keras 3 model; received {type(model).__name__}")
    if path.endswith((".keras", ".h5", ".hdf5")):
        model.save(path)
    elif keras3:
        raise ValueError(f"`path` {path!r}: a Keras 3 model is saved as a .keras (or .h5) file; "
                         "a SavedModel from Keras 3's export() has no layer graph to load back")
    else:
        model.save(path, save_format="tf")


def _refuse_lambda(path, config_text, safe_mode):
    if safe_mode and '"Lambda"' in config_text:
        raise ValueError(
            f"{path!r} holds a Lambda layer, whose stored Python code loading would run; "
            "refused in safe mode. Pass safe_mode=False (--unsafe on the command line) only "
            "for a file you trust."
        )


def _custom_objects():
    from tf_vib import layers  # noqa: F401  (registers tf-vib's layers with tf_keras)

    return None


def _load_keras_zip(path, *, safe_mode):
    try:
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read("metadata.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise ValueError(f"{path!r} is not a Keras .keras file (a zip with metadata.json): "
                         f"{error}") from None
    version = str(metadata.get("keras_version", ""))
    _custom_objects()
    if version.startswith("3"):
        _tf_vib_layers()
        return _keras3().saving.load_model(path, safe_mode=safe_mode)
    return tf_keras.models.load_model(path, safe_mode=safe_mode)


def _load_h5(path, *, safe_mode):
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            config = handle.attrs.get("model_config")
            version = handle.attrs.get("keras_version", "")
    except OSError as error:
        raise ValueError(f"{path!r} is not an HDF5 model file: {error}") from None
    if config is None:
        raise ValueError(f"{path!r} holds weights only (no model_config); tf-vib needs the "
                         "whole model, saved with model.save()")
    config = config.decode() if isinstance(config, bytes) else config
    version = version.decode() if isinstance(version, bytes) else str(version)
    _refuse_lambda(path, config, safe_mode)
    _custom_objects()
    if version.startswith("3"):
        _tf_vib_layers()
        return _keras3().saving.load_model(path, safe_mode=safe_mode)
    return tf_keras.models.load_model(path)


def _load_saved_model(path, *, safe_mode):
    metadata = os.path.join(path, "keras_metadata.pb")
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise ValueError(f"{path!r} is a directory but not a SavedModel (no saved_model.pb)")
    if not os.path.exists(metadata):
        raise ValueError(
            f"{path!r} is a SavedModel without a Keras layer graph (written by Keras 3's "
            "export() or tf.saved_model.save): tf-vib cannot rebuild its layers. Pass the "
            ".keras file the model was saved to (model.save('model.keras')) instead."
        )
    with open(metadata, "rb") as handle:
        _refuse_lambda(path, handle.read().decode("utf-8", "replace"), safe_mode)
    _custom_objects()
    return tf_keras.models.load_model(path)
