"""The input standardisation carried inside the file: ``(x - mean) / std`` as its first ops.

The data set loaders standardise each channel with the training set's mean and standard
deviation (``tf_vib.datasets.uea`` keeps them in ``data.info["mean"]`` and ``["std"]``). A
file converted with ``standardize=`` computes that itself (a SUB and a MUL on the input,
in every mode and runtime), so the device feeds raw sensor values. It is also noted in the
file's ``tf_vib`` metadata, where `converters.describe_tflite` shows it and
`converters.verify` reads it: Keras then gets the standardised inputs, the file the raw ones.
"""

import numpy as np

__all__ = ["check_standardize", "standardized"]


def check_standardize(standardize, specs):
    """``None`` or ``(mean, std)`` float32 arrays shaped for the model's one float input.

    Args:
      standardize: None, a ``(mean, std)`` pair, or a mapping with ``"mean"`` and ``"std"``
        (such as a loader's ``data.info``); each a number or an array that broadcasts to one
        sample (usually one value per channel, the last axis).
      specs: the file's input specs (`converters.inputs.input_specs`).
    """
    if standardize is None:
        return None
    if isinstance(standardize, dict) and {"mean", "std"} <= set(standardize):
        pair = standardize["mean"], standardize["std"]
    elif isinstance(standardize, (tuple, list)) and len(standardize) == 2:
        pair = tuple(standardize)
    else:
        raise ValueError(f"`standardize` must be None, a (mean, std) pair or a dict with 'mean' and 'std'; "
                         f"received {type(standardize).__name__}")
    if len(specs) != 1 or not specs[0].dtype.is_floating:
        raise ValueError("`standardize` needs a model with one float input; this one takes "
                         f"{[f'{s.dtype.name}{s.shape.as_list()}' for s in specs]}")
    sample = tuple(specs[0].shape[1:])
    mean, std = (np.asarray(v, np.float32) for v in pair)
    for name, value in (("mean", mean), ("std", std)):
        try:
            np.broadcast_shapes(value.shape, sample)
        except ValueError:
            raise ValueError(f"`standardize` {name} of shape {value.shape} does not broadcast to one input "
                             f"sample of shape {sample}") from None
        if not np.all(np.isfinite(value)):
            raise ValueError(f"`standardize` {name} must be finite; received {value.tolist()}")
    if np.any(std <= 0):
        raise ValueError(f"`standardize` std must be > 0; received {std.tolist()}")
    return mean, std


def standardized(x, mean, std):
    """``(x - mean) / std`` as float32: what the model sees of the raw ``x``."""
    return ((np.asarray(x, np.float32) - mean) / std).astype(np.float32)
