"""The benchmark's data sets: tuning sets, held-out sets (framed), reserved sets (refused).

The tuning sets are the ones compress()'s defaults were chosen on. The held-out sets test
whether a change decided on the tuning sets generalises: they run after a change is decided
and report whatever comes out (a change chosen by looking at them is tuning on them). The
reserved sets are for independent checks: no test, benchmark or tuning run uses them.
"""

import dataclasses

import numpy as np

__all__ = ["TUNING", "HELD_OUT", "RESERVED", "DATASETS", "MAX_STEPS", "frame", "load"]

TUNING = ("JapaneseVowels", "digits_rows", "synthetic_actions")
HELD_OUT = ("ArrowHead", "OSULeaf", "ACSF1")
RESERVED = ("BasicMotions", "GunPoint", "ItalyPowerDemand", "PickupGestureWiimoteZ")
DATASETS = TUNING + HELD_OUT
#: Longest sequence an LSTM of the benchmark reads; longer series are framed (`frame`).
MAX_STEPS = 32
#: In quick mode: at most this many training and test sequences (a stratified draw).
QUICK_SAMPLES = 60


def frame(x, max_steps=MAX_STEPS):
    """``(n, T, c)`` series as ``(n, ceil(T / f), f * c)``: ``f = ceil(T / max_steps)``
    consecutive samples per step, zero-padded at the front to a multiple of ``f``.

    The padding goes in front, as `tf_vib.datasets.uea` pads (after standardisation a zero is
    the training mean), so that the last step, which the LSTM reads out, is real data.
    Series of at most ``max_steps`` samples come back unchanged.
    """
    n, steps, channels = x.shape
    width = -(-steps // max_steps)
    if width == 1:
        return x
    framed = -(-steps // width)
    padded = np.zeros((n, framed * width, channels), x.dtype)
    padded[:, framed * width - steps:] = x
    return padded.reshape(n, framed, width * channels)


def _synthetic_pixels():
    from tf_vib import datasets

    data = datasets.synthetic_actions(40, frames=8, size=32)
    flat = lambda x: x.reshape(len(x), x.shape[1], -1)  # noqa: E731  (8 frames of 3072 pixels)
    return dataclasses.replace(data, x_train=flat(data.x_train), x_test=flat(data.x_test))


def _subsample(x, y, count, seed):
    from tf_vib.datasets.sequences import stratified_indices

    if len(y) <= count:
        return x, y
    _, kept = stratified_indices(y, count / len(y), seed=seed)
    return x[kept], y[kept]


def load(name, *, quick=False):
    """The data set ``name`` of `DATASETS`, framed to at most `MAX_STEPS` steps.

    ``quick``: a stratified draw of at most `QUICK_SAMPLES` training and test sequences.
    """
    from tf_vib import datasets

    if name in RESERVED:
        raise ValueError(f"`name` {name!r} is reserved for independent checks: no benchmark run uses "
                         f"{', '.join(RESERVED)}")
    if name not in DATASETS:
        raise ValueError(f"`name` must be one of {list(DATASETS)}; received {name!r}")
    data = _synthetic_pixels() if name == "synthetic_actions" else datasets.load(name)
    if data.x_train.shape[1] > MAX_STEPS:
        info = {**data.info, "framed": {"steps": data.x_train.shape[1], "max_steps": MAX_STEPS}}
        data = dataclasses.replace(data, x_train=frame(data.x_train), x_test=frame(data.x_test), info=info)
    if quick:
        train = _subsample(data.x_train, data.y_train, QUICK_SAMPLES, 0)
        test = _subsample(data.x_test, data.y_test, QUICK_SAMPLES, 1)
        data = dataclasses.replace(data, x_train=train[0], y_train=train[1], x_test=test[0], y_test=test[1])
    return data
