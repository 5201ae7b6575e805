"""The user's files on the command line: models (loaded safely) and ``.npz`` arrays.

Shared by ``tf-vib compress`` and ``tf-vib convert``. Every problem with a file is a
`UsageError`, raised before any training or conversion: ``main`` prints it and exits with
status 2, as argparse does for a bad flag.
"""

import pathlib

import numpy as np

__all__ = ["UsageError", "MODEL_FORMATS", "model_format", "load_model", "read_arrays", "labels_in_output_order"]

#: What a MODEL argument may be, by how its path ends (a directory: a SavedModel).
MODEL_FORMATS = {".keras": "a .keras file", ".h5": "an HDF5 file", ".hdf5": "an HDF5 file",
                 "": "a SavedModel directory"}


class UsageError(Exception):
    """A bad file, array or flag value: reported in one message, no traceback, exit status 2."""


def model_format(path, argument="MODEL"):
    """The format of the model at ``path``: a `MODEL_FORMATS` key (``""`` for a SavedModel)."""
    path = pathlib.Path(path)
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise UsageError(f"{argument} {str(path)!r} is a directory without saved_model.pb, not a SavedModel")
        return ""
    if not path.is_file():
        raise UsageError(f"{argument} {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in MODEL_FORMATS or not suffix:
        raise UsageError(f"{argument} {str(path)!r} is not a model file tf-vib reads: it takes "
                         f"{', '.join(sorted(set(MODEL_FORMATS.values())))}; received a {suffix or 'file without extension'}")
    return suffix


def load_model(path, *, unsafe=False, argument="MODEL"):
    """The model at ``path`` (either Keras), loaded by `tf_vib.bridge.load_model` in safe mode
    unless ``unsafe``: a Lambda layer's code is not run from a file the user did not vouch for.

    Inside `tf_vib.vib_scope`, as ``tf-vib convert`` always loaded: a tf_keras file saved
    mid-pruning holds tfmot's wrappers, which only that scope names.
    """
    from tf_vib import bridge, vib_scope

    model_format(path, argument)
    try:
        with vib_scope():
            return bridge.load_model(str(path), safe_mode=not unsafe)
    except (ValueError, TypeError, OSError) as error:
        message = str(error).rstrip()
        if str(path) not in message:
            message = f"{str(path)!r} could not be loaded: {message}"
        if "Lambda" in message and "--unsafe" not in message:  # Keras's own refusal names safe_mode only
            message += " On the command line: pass --unsafe, only for a file you trust."
        raise UsageError(f"{argument}: {message}") from error


def _parts(data, letter, path, argument):
    """``letter``'s array, or ``{name: array}`` from ``<letter>_<name>`` keys, or None."""
    named = {key[2:]: data[key] for key in data.files if key.startswith(f"{letter}_") and len(key) > 2}
    if letter in data.files and named:
        raise UsageError(f"{argument} {str(path)!r} has both {letter!r} and {sorted(f'{letter}_' + n for n in named)}: "
                         f"give {letter!r} for a model with one {'input' if letter == 'x' else 'output'}, "
                         f"or one '{letter}_<name>' per {'input' if letter == 'x' else 'output'}, not both")
    if letter in data.files:
        return data[letter]
    return named or None


def read_arrays(path, argument, *, labels):
    """``(x, y)`` from a ``.npz`` file (or, without ``labels``, a ``.npy`` of inputs).

    ``x`` is the array ``x``, or for a model with several inputs a dict keyed by input name
    from arrays ``x_<input name>``; ``y`` likewise from ``y`` or ``y_<output name>`` (None
    when absent). Shapes and names are checked against the model by whoever takes them
    (``compress``, ``converters.verify``), with the same messages as in Python.

    Args:
      path: the file. argument: how errors name it (``--data``).
      labels: True: ``y`` is required (and a ``.npy`` refused).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise UsageError(f"{argument} {str(path)!r} does not exist")
    keys = "'x' (or 'x_<input name>' per input)" + (" and 'y' (or 'y_<output name>' per output)" if labels
                                                      else ", optionally 'y' (or 'y_<output name>')")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise UsageError(f"{argument} {str(path)!r} is not a NumPy .npz file ({error}); it needs arrays {keys}") from None
    if isinstance(data, np.ndarray):
        if labels:
            raise UsageError(f"{argument} {str(path)!r} is a .npy array without labels; give a .npz with arrays {keys}")
        return data, None
    with data:
        x, y = _parts(data, "x", path, argument), _parts(data, "y", path, argument)
    if x is None or (labels and y is None):
        raise UsageError(f"{argument} {str(path)!r} has arrays {data.files}; it needs {keys}")
    return x, y


def labels_in_output_order(y, model):
    """``y`` as `converters.verify` takes it: a dict by output name becomes a list in the
    model's output order (None for an output without labels)."""
    if not isinstance(y, dict):
        return y
    names = list(getattr(model, "output_names", None) or [t.name.split("/")[0] for t in model.outputs])
    unknown = sorted(set(y) - set(names))
    if unknown:
        raise UsageError(f"labels {[f'y_{n}' for n in unknown]} name no output of the model; its outputs are "
                         f"{names}: give 'y_<output name>' for each")
    return [y.get(name) for name in names]
