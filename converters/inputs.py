"""The inputs of a model to convert: fixed signatures, token ranges, representative samples.

A TFLite file has one fixed shape and dtype per input. Token ids (an ``int32`` input read
by an ``Embedding``) stay integers in every mode, full int8 included: only float inputs
are quantized. Samples fed to the converter (the first invoke, the int8 calibration) must
be valid for each input: integers in ``[0, input_dim)`` for an ``Embedding``'s ids, floats
otherwise.
"""

import numpy as np

from converters.runtime import split_inputs
from tf_vib._graph import tensor_users
from tf_vib._keras import keras, tf

__all__ = ["input_names", "input_specs", "output_names", "token_limits", "as_samples", "probe_batch"]


def input_names(model):
    """The name of each input, in ``model.inputs`` order: what a dict of inputs is keyed by.

    Keras keys a dict of inputs by the dict the model was built with, if it was, else by
    its ``Input`` layers' names; the file's inputs get the same names.
    """
    if isinstance(model.input, dict):
        return sorted(model.input)
    return list(model.input_names)


def input_specs(model, batch_size, time_steps=None):
    """One ``tf.TensorSpec`` per input of ``model``: the file's fixed input shapes.

    Each spec has the input's dtype (token ids stay int32), ``batch_size`` and, for an
    input whose number of steps is ``None``, ``time_steps``. A model with one input keeps
    the name ``input``; several inputs are named after `input_names`.

    Raises:
      ValueError: an input has unknown dimensions besides time, or has ``None`` steps and
        ``time_steps`` is not given, or ``time_steps`` disagrees with a fixed length.
    """
    names = input_names(model) if len(model.inputs) > 1 else ["input"]
    specs = []
    for name, tensor in zip(names, model.inputs, strict=True):
        shape = list(tensor.shape)
        which = f"input {name!r}" if len(names) > 1 else "input"
        unknown = [i for i, d in enumerate(shape[1:], start=1) if d is None]
        if unknown and unknown != [1]:
            raise ValueError(f"`model`'s {which} shape {tuple(shape)} has unknown dimensions besides time")
        if unknown:
            if time_steps is None:
                raise ValueError(
                    f"`model` takes sequences of any length ({which} shape {tuple(shape)}); a TFLite "
                    "file has a fixed shape: pass time_steps=N"
                )
            shape[1] = time_steps
        specs.append(tf.TensorSpec([batch_size] + shape[1:], tensor.dtype, name=name))
    fixed = [tensor.shape[1] for tensor in model.inputs if len(tensor.shape) > 1]
    if time_steps is not None and None not in fixed and time_steps not in fixed:
        raise ValueError(f"`time_steps`={time_steps} disagrees with the model's {fixed[0]} steps")
    return specs


def output_names(model):
    """The file's output names, in ``model.outputs`` order."""
    count = len(model.outputs)
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def token_limits(model):
    """For each input, the ``input_dim`` of the ``Embedding`` layers reading it (the smallest), or None."""
    users = tensor_users(model)
    limits = []
    for tensor in model.inputs:
        dims = [node.layer.input_dim for node in users.get(id(tensor), [])
                if isinstance(node.layer, keras.layers.Embedding)]
        limits.append(min(dims) if dims else None)
    return limits


def _dataset_arrays(data, names, specs, argument):
    """The inputs of every element of a ``tf.data.Dataset`` (``x`` or ``(x, y, ...)``), concatenated."""
    columns = [[] for _ in names]
    for element in data.as_numpy_iterator():
        x = element[0] if isinstance(element, tuple) else element
        for column, value, spec in zip(columns, split_inputs(x, names, argument)[0], specs, strict=True):
            value = np.asarray(value)
            column.append(value[None] if value.ndim == len(spec.shape) - 1 else value)
    if not columns[0]:
        raise ValueError(f"`{argument}` is an empty dataset")
    return [np.concatenate(column) for column in columns]


def as_samples(data, specs, limits, argument="representative_data"):
    """Samples for the converter: one array per input, each of its spec's sample shape and type.

    Args:
      data: for one input, an array of samples (n, ...); for several, a list, tuple or dict
        by input name of them; or a ``tf.data.Dataset`` of such elements (or ``(x, y)``).
      specs: the file's input specs (`input_specs`); limits: `token_limits`.
      argument: the argument's name in error messages.

    Raises:
      TypeError, ValueError: the structure, a shape, the number of samples, NaN in a float
        input, or token ids that are not whole numbers in ``[0, input_dim)``.
    """
    names = [spec.name for spec in specs]
    if isinstance(data, tf.data.Dataset):
        arrays, labels = _dataset_arrays(data, names, specs, argument), None
    else:
        arrays, labels = split_inputs(data, names, argument)
    labels = labels or ([argument] if len(specs) == 1 else [f"{argument}[{name!r}]" for name in names])
    samples = [_checked(array, spec, limit, label)
               for array, spec, limit, label in zip(arrays, specs, limits, labels, strict=True)]
    counts = [len(s) for s in samples]
    if len(set(counts)) > 1:
        raise ValueError(f"the arrays of `{argument}` hold different numbers of samples: {counts}")
    if counts[0] == 0:
        raise ValueError(f"`{argument}` holds no samples")
    return samples


def _checked(data, spec, limit, label):
    sample_shape = tuple(spec.shape[1:])
    try:
        x = np.asarray(data, dtype=np.float64 if spec.dtype.is_integer else np.float32)
    except (TypeError, ValueError) as error:
        raise TypeError(f"`{label}` must be an array of input samples or a tf.data.Dataset; "
                        f"received {type(data).__name__}") from error
    if x.ndim != len(sample_shape) + 1 or x.shape[1:] != sample_shape:
        raise ValueError(
            f"`{label}` must have shape (n, {', '.join(map(str, sample_shape))}) to match the "
            f"model's input; received shape {x.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"`{label}` contains NaN or infinite values")
    if not spec.dtype.is_integer:
        return x
    if not np.all(x == np.round(x)):
        raise ValueError(f"`{label}` must hold whole numbers: the model's input is {spec.dtype.name}")
    if limit is not None and x.size and (x.min() < 0 or x.max() >= limit):
        raise ValueError(f"`{label}` holds token ids from {int(x.min())} to {int(x.max())}; the Embedding "
                         f"reading this input takes ids in [0, {limit})")
    return x.astype(spec.dtype.as_numpy_dtype)


def probe_batch(specs, limits, seed=0):
    """One batch of valid inputs for the file's first invoke: normal floats, or token ids in range."""
    rng = np.random.default_rng(seed)
    batch = []
    for spec, limit in zip(specs, limits, strict=True):
        if spec.dtype.is_integer:
            # Without an Embedding to bound them, small non-negative ids are the safest guess.
            batch.append(rng.integers(0, limit or 2, size=spec.shape).astype(spec.dtype.as_numpy_dtype))
        else:
            batch.append(rng.normal(size=spec.shape).astype(spec.dtype.as_numpy_dtype))
    return batch
