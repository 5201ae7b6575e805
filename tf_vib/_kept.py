"""Which units and channels survive stripping: the channel records and the masks' values.

A ``Channels`` record relates a stripped tensor to the masked model's tensor::

    masked[..., physical[j]] == scale[j] * stripped[..., j]    for live j
    masked[..., c] == offset[c]                                  for every other c

``offset`` (None: all 0) is where a carrier made a removed unit's 0 a constant (a
BatchNormalization, an activation with ``f(0) != 0``); NaN marks a channel no reader
uses (a column dropped because every reader's mask prunes it). The layer reading the
tensor through a kernel folds the constants into its bias (``constants``).
"""

import dataclasses

import numpy as np

from tf_vib._checks import check_float, optional
from tf_vib.layers.vib_mask import GaussianMask

__all__ = ["Channels", "LayerRecord", "check_threshold", "mask_kept", "unit_gates", "alive_units", "deterministic",
           "force_min", "full_like"]


@dataclasses.dataclass
class Channels:
    physical: np.ndarray  # original channel index of each channel of the new tensor
    scale: np.ndarray
    live: np.ndarray
    total: int
    offset: np.ndarray | None = None

    def offsets(self):
        """``offset`` as a vector of ``total`` (zeros when None)."""
        return np.zeros(self.total) if self.offset is None else np.asarray(self.offset, dtype=np.float64)

    def constants(self):
        """What a reader's kernel rows of the channels not in the stripped tensor multiply:
        ``offset`` with the present channels (and NaN, unused ones) at 0."""
        constants = np.nan_to_num(self.offsets(), nan=0.0)
        constants[self.physical[self.live]] = 0.0
        return constants

    def shifted(self):
        """Whether some channel the stripped tensor lacks holds a nonzero constant."""
        return bool(np.any(self.constants() != 0))

    def held(self):
        """Whether some channel the stripped tensor lacks is one a reader may use (not NaN)."""
        absent = np.ones(self.total, bool)
        absent[self.physical[self.live]] = False
        return bool(np.any(np.isfinite(self.offsets()[absent])))

    @classmethod
    def unused(cls, indices, total):
        """``subset`` whose other channels no reader uses (offset NaN)."""
        return cls.subset(indices, total).with_offset(np.full(total, np.nan))

    def with_offset(self, offset):
        return dataclasses.replace(self, offset=offset)

    @classmethod
    def full(cls, total):
        return cls(np.arange(total), np.ones(total), np.ones(total, bool), total)

    @classmethod
    def subset(cls, indices, total):
        indices = np.asarray(indices)
        return cls(indices, np.ones(len(indices)), np.ones(len(indices), bool), total)

    @property
    def is_full(self):
        return (
            len(self.physical) == self.total
            and np.array_equal(self.physical, np.arange(self.total))
            and self.live.all()
            and np.all(self.scale == 1.0)
        )


@dataclasses.dataclass
class LayerRecord:
    """What stripping did to one layer: the basis of ``tf_vib.summary``."""

    name: str
    kind: str
    units_total: int | None
    units_kept: int | None
    inputs_total: int | None
    inputs_kept: int | None
    params_before: int
    params_after: int


def check_threshold(threshold):
    """None, or a finite number >= 0: a unit is kept while its log_alpha < threshold (0 is the
    paper's rule and prunes the most)."""
    return optional("threshold", threshold, lambda name, value: check_float(name, value, allow_low=True))


def mask_kept(mask: GaussianMask, threshold):
    threshold = mask.settings.keep_threshold if threshold is None else threshold
    log_alpha = np.asarray(mask.log_alpha(), dtype=np.float64)
    return log_alpha < threshold, log_alpha


def unit_gates(cell):
    """The gates of a VIB cell whose mask can remove a unit, the state's own first: an
    LSTM's output, candidate and input gates (``"oci"``); a GRU's or SimpleRNN's ``"h"``."""
    return cell.UNIT_GATES


def alive_units(cell, threshold):
    """Which units of a VIB cell survive ``threshold``, and each unit's score.

    A unit survives while every mask that can remove it keeps it (``unit_gates``); its
    score is the largest log_alpha among those masks (large means noise). Returns
    ``(alive, score)``, NumPy vectors of ``cell.units``.
    """
    kept, score = {}, np.full(cell.units, -np.inf)
    for gate in unit_gates(cell):
        if gate in cell.vib_masks:
            kept[gate], log_alpha = mask_kept(cell.vib_masks[gate], threshold)
            score = np.maximum(score, log_alpha)
    return cell.unit_alive(kept), score


def deterministic(mask, kept):
    mu = np.asarray(mask.mu, dtype=np.float64)
    return mu * kept if mask.folds else kept.astype(np.float64)


def _too_few(layer_name, what, log_alpha_of_unit, total):
    best = float(np.min(log_alpha_of_unit))
    return ValueError(
        f"strip_masks would remove all {total} {what} of layer {layer_name!r}. Its most "
        f"informative unit has log_alpha {best:.4g}: pass threshold > {max(best, 0.0):.4g} "
        "to keep it, or min_units=1 to keep the best units of every layer"
    )


def force_min(kept_unit, score, min_units, layer_name, what):
    """Keep at least ``min_units`` units (those with the lowest score), or raise."""
    if kept_unit.sum() >= max(min_units, 1):
        return kept_unit
    if min_units == 0:
        raise _too_few(layer_name, what, score, len(score))
    forced = kept_unit.copy()
    forced[np.argsort(score, kind="stable")[: min(min_units, len(score))]] = True
    return forced


def full_like(tensor):
    rank = tensor.shape.rank
    return Channels.full(int(tensor.shape[-1])) if rank and tensor.shape[-1] is not None else None
