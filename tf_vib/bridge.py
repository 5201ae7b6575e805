"""Keras 3 models in and out of tf-vib: the one module that imports Keras 3.

tf-vib works in tf_keras (tfmot accepts nothing else), while ``import keras`` in TF 2.21 is
Keras 3. The bridge rebuilds a model in the other Keras layer by layer, through each layer's
config (``tf_vib._bridge_config``) and weights (``get_weights``/``set_weights``, which both
Keras order alike), walking the functional graph call by call (``tf_vib._bridge_graph``), so nested models, shared
layers, several inputs and outputs and the calls' keyword arguments come across as they were.
Keras 3 is imported only when a function here needs it.

``load_model``/``save_model`` read and write model files of either Keras.
"""

import functools
import json
import os
import zipfile

from tf_vib._bridge_config import SUPPORTED
from tf_vib._bridge_graph import Converter
from tf_vib._keras import keras as tf_keras

__all__ = ["is_keras3", "to_tf_keras", "to_keras3", "to_internal", "load_model", "save_model",
           "SUPPORTED"]


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
    return Converter(_keras3(), tf_keras, to_keras3=False, extra=_tf_vib_layers(reverse=True)).model(model)


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
    return Converter(tf_keras, _keras3(), to_keras3=True, extra=_tf_vib_layers()).model(model)


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
