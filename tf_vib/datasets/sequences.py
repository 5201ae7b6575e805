"""Sequence classification data sets: the data container, a stratified split, the
8x8 digits read row by row, and the UEA/UCR sets that ship with ``aeon``.

Everything here is NumPy; nothing downloads.
"""

import dataclasses
import pathlib

import numpy as np

from tf_vib._checks import (
    check_existing_dir,
    check_fraction,
    check_int,
    check_seed,
    require_module,
)
from tf_vib.datasets.padding import pad_sequences

__all__ = [
    "SequenceDataset",
    "stratified_split",
    "stratified_indices",
    "digits_rows",
    "uea",
    "uea_names",
]


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class SequenceDataset:
    """A classification data set split into training and test parts.

    Args:
      x_train, x_test: float32 arrays of shape ``(n, time, ...)``: ``(n, time, features)``
        for sequences, ``(n, frames, height, width, channels)`` for videos.
      y_train, y_test: int64 label arrays of shape ``(n,)`` with values in
        ``[0, n_classes)``.
      n_classes: int, number of classes.
      name: str, the data set's name.
      class_names: tuple of str, the name of label ``i`` at position ``i``.
      info: dict, how the data were made (source, padding, statistics, split, ...).

    Example:

    >>> data = tf_vib.datasets.digits_rows()
    >>> data.x_train.shape, data.n_classes
    ((1348, 8, 8), 10)
    >>> (x_tr, y_tr), (x_val, y_val) = data.split_validation(0.2, seed=0)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    name: str
    class_names: tuple
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if not isinstance(x, np.ndarray) or x.ndim < 2:
                raise ValueError(
                    f"`x_{part}` must be a NumPy array of shape (n, time, ...); received "
                    f"{type(x).__name__} with shape {getattr(x, 'shape', None)}"
                )
            if not isinstance(y, np.ndarray) or y.shape != (len(x),):
                raise ValueError(
                    f"`y_{part}` must be a NumPy array of shape ({len(x)},) to match `x_{part}`; "
                    f"received shape {getattr(y, 'shape', None)}"
                )
            if len(y) and (y.min() < 0 or y.max() >= self.n_classes):
                raise ValueError(
                    f"`y_{part}` must hold labels in [0, {self.n_classes}); received values "
                    f"from {y.min()} to {y.max()}"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"`x_train` and `x_test` must have the same shape after the first axis; received "
                f"{self.x_train.shape} and {self.x_test.shape}"
            )
        if len(self.class_names) != self.n_classes:
            raise ValueError(
                f"`class_names` must name each of the {self.n_classes} classes; received "
                f"{len(self.class_names)} names"
            )

    @property
    def input_shape(self):
        """The shape of one example, ``x_train.shape[1:]``."""
        return self.x_train.shape[1:]

    def split_validation(self, fraction=0.2, *, seed=0):
        """Hold out a stratified part of the training set (the test set is not touched).

        Args:
          fraction: float in (0, 1), default 0.2. Share of each class to hold out.
          seed: int, default 0. Seed of the draw.

        Returns:
          ``(x_train, y_train), (x_val, y_val)``.
        """
        return stratified_split(self.x_train, self.y_train, fraction, seed=seed)

    def __repr__(self):
        return (
            f"SequenceDataset(name={self.name!r}, x_train={self.x_train.shape}, "
            f"x_test={self.x_test.shape}, n_classes={self.n_classes})"
        )


def _held_out_counts(counts, fraction):
    """Per-class hold-out sizes: largest-remainder rounding of ``fraction * count`` so the
    total is ``round(fraction * n)``, with at least one example of each class on each side."""
    quotas = fraction * counts
    held = np.clip(np.floor(quotas).astype(np.int64), 1, counts - 1)
    target = int(np.clip(round(fraction * counts.sum()), len(counts), counts.sum() - len(counts)))
    order = np.argsort(-(quotas - np.floor(quotas)), kind="stable")
    for index in order:
        if held.sum() >= target:
            break
        if held[index] < counts[index] - 1:
            held[index] += 1
    return held


def stratified_indices(y, fraction, *, seed=0):
    """Indices ``(kept, held_out)`` of a stratified split of the labels ``y``, each sorted."""
    fraction = check_fraction("fraction", fraction)
    seed = check_seed(seed)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"`y` must be a non-empty 1-D array of labels; received shape {y.shape}")
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        rare = classes[counts < 2].tolist()
        raise ValueError(
            f"Every class needs at least 2 examples for a stratified split; classes {rare} "
            "have only 1."
        )
    rng = np.random.default_rng(seed)
    held = _held_out_counts(counts, fraction)
    held_out = [
        rng.permutation(np.flatnonzero(inverse == c))[: held[c]] for c in range(len(classes))
    ]
    held_out = np.sort(np.concatenate(held_out))
    kept = np.setdiff1d(np.arange(len(y)), held_out)
    return kept, held_out


def stratified_split(x, y, fraction, *, seed=0):
    """Split ``(x, y)`` in two with the same class proportions in each part.

    Each class keeps at least one example on each side; the held-out part has
    ``round(fraction * len(y))`` examples, and both parts keep the original order.

    Args:
      x: array of shape ``(n, ...)``.
      y: array of shape ``(n,)``, the labels.
      fraction: float in (0, 1). Share of each class that goes to the held-out part.
      seed: int, default 0. The same seed always gives the same split.

    Returns:
      ``(x_kept, y_kept), (x_held_out, y_held_out)``.

    Example:

    >>> x, y = np.zeros((10, 3, 2)), np.array([0, 1] * 5)
    >>> (x_tr, y_tr), (x_val, y_val) = stratified_split(x, y, 0.2, seed=0)
    >>> len(x_tr), sorted(y_val.tolist())
    (8, [0, 1])
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or len(x) != len(y):
        raise ValueError(
            f"`x` and `y` must have the same number of examples; received x of shape "
            f"{x.shape} and y of shape {y.shape}"
        )
    kept, held_out = stratified_indices(y, fraction, seed=seed)
    return (x[kept], y[kept]), (x[held_out], y[held_out])


def digits_rows(test_fraction=0.25, *, seed=0):
    """scikit-learn's 8x8 handwritten digits, read as 8 time steps of 8 pixels (one row
    per step).

    Pixels are scaled from 0..16 to [0, 1]. The split is stratified and fixed by ``seed``.

    Args:
      test_fraction: float in (0, 1), default 0.25. Share of each digit kept for testing.
      seed: int, default 0. Seed of the split.

    Returns:
      A `SequenceDataset` with ``x`` of shape ``(n, 8, 8)`` and 10 classes (1797 digits:
      1348 for training and 449 for testing with the defaults).

    Example:

    >>> data = tf_vib.datasets.digits_rows()
    >>> data.x_train.shape[1:], data.n_classes
    ((8, 8), 10)
    """
    test_fraction = check_fraction("test_fraction", test_fraction)
    seed = check_seed(seed)
    sklearn_datasets = require_module(
        "sklearn.datasets", purpose="digits_rows()", package="scikit-learn"
    )
    digits = sklearn_datasets.load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    (x_train, y_train), (x_test, y_test) = stratified_split(x, y, test_fraction, seed=seed)
    return SequenceDataset(
        x_train,
        y_train,
        x_test,
        y_test,
        n_classes=10,
        name="digits_rows",
        class_names=tuple(str(d) for d in range(10)),
        info={"source": "sklearn.datasets.load_digits", "test_fraction": test_fraction,
              "seed": seed, "scale": "pixel / 16"},
    )


def _bundled_dir():
    aeon_datasets = require_module("aeon.datasets", purpose="uea()", package="aeon")
    return pathlib.Path(aeon_datasets.__file__).parent / "data"


def _is_classification(ts_file):
    with open(ts_file, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            lowered = line.strip().lower()
            if lowered.startswith("@classlabel"):
                return lowered.split()[1:2] == ["true"]
            if lowered.startswith("@data"):
                break
    return False


def _available(root):
    if not root.is_dir():
        return []
    return sorted(
        folder.name
        for folder in root.iterdir()
        if (folder / f"{folder.name}_TEST.ts").is_file()
        and (folder / f"{folder.name}_TRAIN.ts").is_file()
        and _is_classification(folder / f"{folder.name}_TRAIN.ts")
    )


def uea_names(data_dir=None):
    """Names of the UEA/UCR classification sets readable without a download.

    Args:
      data_dir: path or None, default None. A folder laid out as
        ``<data_dir>/<name>/<name>_TRAIN.ts`` (the layout aeon downloads to); None lists
        the sets bundled with ``aeon``.

    Returns:
      A sorted list of names, e.g. ``['ArrowHead', 'BasicMotions', ..., 'JapaneseVowels', ...]``.
    """
    root = _bundled_dir() if data_dir is None else check_existing_dir("data_dir", data_dir)
    return _available(root)


def _sorted_names(labels):
    names = sorted({str(label) for label in labels})
    try:
        return sorted(names, key=float)
    except ValueError:
        return names


def uea(name="JapaneseVowels", *, max_length=None, data_dir=None):
    """A UEA/UCR time series classification set, read with ``aeon`` (never downloaded).

    Variable-length series are padded with zeros **at the front** (after standardisation,
    so a zero is the training mean) to ``max_length`` steps, without a Keras mask: the last
    step is always real data, which is what a plain ``LSTM(return_sequences=False)`` reads
    out, and the model stays convertible to TFLite's fused LSTM. Series longer than
    ``max_length`` keep their **last** ``max_length`` steps (truncated at the front, like the
    padding); in JapaneseVowels one test series (29 steps) is longer than every training
    series (at most 26) and loses its first 3 steps. ``info`` records the original lengths
    and how many series were truncated.

    Each channel is standardised with the mean and standard deviation of the real (not
    padded) steps of the training series only; missing values (NaN) become 0 (the mean).
    Labels are the class names in sorted order (numerically when all are numbers).

    Args:
      name: str, default "JapaneseVowels". See `uea_names()` for the sets aeon ships:
        JapaneseVowels (12 channels, lengths 7..29, 9 classes, 270/370 series),
        BasicMotions, ArrowHead, GunPoint, ItalyPowerDemand, OSULeaf, ...
      max_length: int or None, default None. Steps per sequence; None uses the longest
        training series.
      data_dir: path or None, default None. Read ``<data_dir>/<name>/<name>_TRAIN.ts`` and
        ``_TEST.ts`` instead of the bundled data (e.g. a set fetched earlier with
        ``aeon.datasets.load_classification(name, extract_path=data_dir)``).

    Returns:
      A `SequenceDataset` with float32 ``x`` of shape ``(n, max_length, channels)``.

    Example:

    >>> data = tf_vib.datasets.uea("JapaneseVowels")
    >>> data.x_train.shape, data.x_test.shape
    ((270, 26, 12), (370, 26, 12))
    """
    if max_length is not None:
        max_length = check_int("max_length", max_length)
    root = _bundled_dir() if data_dir is None else check_existing_dir("data_dir", data_dir)
    available = _available(root)
    if name not in available:
        where = "bundled with aeon" if data_dir is None else f"in data_dir={str(data_dir)!r}"
        raise ValueError(
            f"`name` must be a UEA/UCR classification set {where}; received {name!r}. "
            f"Available: {', '.join(available) or 'none'}. tf-vib never downloads: fetch other "
            "sets with aeon.datasets.load_classification(name, extract_path=folder) and pass "
            "data_dir=folder."
        )
    aeon_datasets = require_module("aeon.datasets", purpose="uea()", package="aeon")
    extract_path = None if data_dir is None else str(root)
    parts = {}
    for split in ("train", "test"):
        x, y = aeon_datasets.load_classification(name, split=split, extract_path=extract_path)
        parts[split] = ([np.asarray(s, np.float64).reshape(len(s), -1) for s in x], y)
    (x_train, y_train), (x_test, y_test) = parts["train"], parts["test"]

    class_names = _sorted_names(y_train)
    unknown = sorted({str(v) for v in y_test} - set(class_names))
    if unknown:
        raise ValueError(f"The test set of {name!r} has classes {unknown} absent from training.")
    index = {c: i for i, c in enumerate(class_names)}

    steps = np.concatenate(x_train, axis=1)
    mean = np.nanmean(steps, axis=1)
    std = np.nanstd(steps, axis=1)
    std = np.where(std > 1e-12, std, 1.0)
    lengths = {}
    for split, series in (("train", x_train), ("test", x_test)):
        lengths[split] = np.array([s.shape[1] for s in series])
        for s in series:
            s -= mean[:, None]
            s /= std[:, None]
            np.nan_to_num(s, copy=False, nan=0.0)
    length = max_length or int(lengths["train"].max())
    return SequenceDataset(
        pad_sequences([s.T for s in x_train], length=length, padding="pre"),
        np.array([index[str(v)] for v in y_train], np.int64),
        pad_sequences([s.T for s in x_test], length=length, padding="pre"),
        np.array([index[str(v)] for v in y_test], np.int64),
        n_classes=len(class_names),
        name=name,
        class_names=tuple(class_names),
        info={
            "source": "aeon" if data_dir is None else str(root),
            "max_length": length,
            "padding": "pre",
            "truncating": "pre",
            "lengths_train": lengths["train"],
            "lengths_test": lengths["test"],
            "n_truncated_train": int((lengths["train"] > length).sum()),
            "n_truncated_test": int((lengths["test"] > length).sum()),
            "mean": mean.astype(np.float32),
            "std": std.astype(np.float32),
        },
    )
