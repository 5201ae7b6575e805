"""select_frames: the frames a frame-pruned model reads, picked out of whole clips."""

import numpy as np

from tf_vib._keras import tf
from tf_vib.layers.select_features import check_indices

__all__ = ["select_frames"]


def _positions(kept):
    if isinstance(kept, dict):
        if set(kept) != {"kept", "of"}:
            raise ValueError(f"`kept` must be a list of frame positions or a report's frames dict "
                             f"{{'kept': [...], 'of': T}}; received kept={kept!r}")
        return check_indices("select_frames", kept["kept"]), int(kept["of"])
    if isinstance(kept, (str, bytes)) or not hasattr(kept, "__iter__"):
        raise ValueError(f"`kept` must be a list of frame positions or a report's frames dict "
                         f"{{'kept': [...], 'of': T}}; received kept={kept!r}")
    return check_indices("select_frames", kept), None


def _check_steps(steps, positions, of):
    if steps is None:
        return
    if positions[-1] >= steps or (of is not None and of != steps):
        raise ValueError(f"`clips` have {steps} frames, but `kept` selects positions {positions}"
                         + (f" of {of} frames" if of is not None else ""))


def select_frames(clips, kept):
    """The kept frames of every clip, the input of ``strip_masks``/``compress`` frame-pruned models.

    Args:
      clips: a NumPy array of clips ``(n, T, ...)``, or a ``tf.data.Dataset`` whose elements are
        clips or ``(clips, labels[, weights])`` tuples: batched ``(batch, T, ...)`` (a first
        dimension of unknown size) or single clips ``(T, ...)``.
      kept: the kept positions (a sorted list of ints), or ``report.frames``
        (``{"kept": [...], "of": T}``; T is then checked too).

    Returns:
      The same kind of object with only the kept frames: ``(n, K, ...)``.

    Example:

    >>> select_frames(np.zeros((2, 6, 3)), {"kept": [1, 4], "of": 6}).shape
    (2, 2, 3)
    """
    positions, of = _positions(kept)
    if isinstance(clips, tf.data.Dataset):
        spec = clips.element_spec
        spec = spec[0] if isinstance(spec, tuple) else spec
        if not isinstance(spec, tf.TensorSpec) or spec.shape.rank is None or spec.shape.rank < 1:
            raise ValueError(f"`clips` must be a dataset of clip tensors or (clips, labels) tuples; "
                             f"received a dataset with elements {clips.element_spec}")
        axis = 1 if spec.shape[0] is None and spec.shape.rank >= 2 else 0
        _check_steps(spec.shape[axis], positions, of)

        def pick(x, *rest):
            x = tf.gather(x, positions, axis=axis)
            return (x, *rest) if rest else x

        return clips.map(pick)
    array = np.asarray(clips)
    if array.ndim < 2:
        raise ValueError(f"`clips` must have shape (n, T, ...); received shape {array.shape}")
    _check_steps(array.shape[1], positions, of)
    return array[:, positions]
