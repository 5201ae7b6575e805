"""Sequences of different lengths padded to one array, the form compress() and Keras take."""

import numbers

import numpy as np

from tf_vib._checks import check_choice, check_int

__all__ = ["pad_sequences"]


def pad_sequences(sequences, *, length=None, padding="post", value=0.0, dtype="float32"):
    """Pad sequences of different lengths into one ``(n, T, F)`` array.

    A model can be told to skip the padding: a ``Masking(mask_value=value)`` layer before
    the recurrent layer (float features), or ``Embedding(..., mask_zero=True)`` for token
    ids padded with 0. Without a mask, pad at the front (``padding="pre"``): an LSTM that
    returns its last state then always ends on real steps (as `uea` does).

    Args:
      sequences: a non-empty list (or object array) of arrays of shape ``(time, features)``,
        each with the same number of features, or of 1-D ``(time,)`` arrays (token ids,
        per-step labels). aeon's series are ``(channels, time)``: pass ``[s.T for s in x]``.
      length: int >= 1 or None, default None. Steps per sequence; None uses the longest.
        Longer sequences lose steps on the padding side: "post" keeps their first
        ``length`` steps, "pre" their last.
      padding: "post" (default) or "pre": where the padding steps go.
      value: number, default 0.0. The padding value; an integer for an integer ``dtype``.
      dtype: NumPy dtype of the result, default "float32"; e.g. "int32" for token ids.

    Returns:
      An array of shape ``(n, length, features)``, or ``(n, length)`` for 1-D sequences.

    Example:

    >>> x = pad_sequences([np.ones((3, 2)), np.ones((5, 2))])
    >>> x.shape
    (2, 5, 2)
    """
    if isinstance(sequences, np.ndarray) and sequences.dtype != object:
        sequences = list(sequences)
    if not isinstance(sequences, (list, tuple, np.ndarray)) or len(sequences) == 0:
        empty = " (empty)" if hasattr(sequences, "__len__") and not len(sequences) else ""
        raise ValueError(f"`sequences` must be a non-empty list of arrays; received "
                         f"{type(sequences).__name__}{empty}")
    arrays = [np.asarray(s) for s in sequences]
    shapes = {a.shape[1:] for a in arrays}
    if any(a.ndim not in (1, 2) for a in arrays) or len(shapes) > 1:
        raise ValueError(
            "`sequences` must all be (time, features) arrays with the same features, or all 1-D "
            f"(time,) arrays; received shapes {sorted({a.shape for a in arrays})[:4]}"
        )
    try:
        numpy_dtype = np.dtype(dtype)
    except TypeError:
        numpy_dtype = None
    if numpy_dtype is None or not np.issubdtype(numpy_dtype, np.number):
        raise ValueError(f"`dtype` must be a numeric NumPy dtype such as 'float32' or 'int32'; "
                         f"received {dtype!r}")
    dtype = numpy_dtype
    integer = np.issubdtype(dtype, np.integer)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
            integer and not float(value).is_integer()):
        kind = f"an integer (dtype {dtype})" if integer else "a number"
        raise ValueError(f"`value` must be {kind}; received {value!r}")
    padding = check_choice("padding", padding, ("post", "pre"))
    steps = max(len(a) for a in arrays) if length is None else check_int("length", length)
    out = np.full((len(arrays), steps) + shapes.pop(), value, dtype)
    for i, a in enumerate(arrays):
        if padding == "post":
            out[i, : min(len(a), steps)] = a[:steps]
        else:
            kept = a[max(len(a) - steps, 0):]
            out[i, steps - len(kept):] = kept
    return out
