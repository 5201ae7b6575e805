"""Low-rank factorisation of a recurrent layer's input kernel, with plain Keras layers.

docs/method.md section 6: the input-to-hidden matrix ``W_x`` (``in x k*u``, ``k`` gate blocks)
of an LSTM (k = 4) or GRU (k = 3) is replaced by its truncated SVD::

    W_x ~ (U_r S_r) V_r^T

and ``x W_x`` becomes a bias-free ``Dense(r)`` with kernel ``U_r S_r`` followed by the same
recurrent layer with input kernel ``V_r^T`` (``r x k*u``). Both are standard layers, so
the model still converts to TFLite's fused LSTM op. It saves parameters only when
``r * (in + k*u) < in * k*u``.
"""

import dataclasses
import numbers

import numpy as np

from tf_vib._graph import rebuild
from tf_vib._keras import keras, require_tf_keras_model

__all__ = ["LowRankInfo", "low_rank"]

_GATES = {keras.layers.LSTM: 4, keras.layers.GRU: 3}


@dataclasses.dataclass(frozen=True)
class LowRankInfo:
    """What ``low_rank`` did to one layer.

    ``relative_error`` is ``||W_x - A B||_F / ||W_x||_F`` for the float32 factors ``A``
    (the Dense kernel) and ``B`` (the new input kernel); ``params_*`` count the recurrent
    layer plus, after, its Dense. ``factorised`` is False when the rank saves nothing.
    """

    rank: int
    full_rank: int
    params_before: int
    params_after: int
    relative_error: float
    factorised: bool


def _choose_rank(singular, rank, energy):
    if rank is not None:
        return min(rank, len(singular))
    share = np.cumsum(singular**2) / max(np.sum(singular**2), np.finfo(float).tiny)
    return int(min(np.searchsorted(share, energy - 1e-12) + 1, len(singular)))


def _check_arguments(model, rank, energy, layers, only_if_smaller):
    require_tf_keras_model(model)
    if (rank is None) == (energy is None):
        raise ValueError(
            f"pass exactly one of `rank` and `energy`; received rank={rank!r}, energy={energy!r}"
        )
    candidates = [layer.name for layer in model.layers if type(layer) in _GATES]
    if rank is not None:
        ranks = rank if isinstance(rank, dict) else dict.fromkeys(candidates, rank)
        for value in ranks.values():
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(
                    "`rank` must be an integer >= 1 or a dict {layer_name: integer >= 1}; "
                    f"received {rank!r}"
                )
        if isinstance(rank, dict):
            layers = list(rank) if layers is None else layers
    if energy is not None and (
        isinstance(energy, bool) or not isinstance(energy, numbers.Real) or not 0 < energy <= 1
    ):
        raise ValueError(f"`energy` must be a number in (0, 1]; received {energy!r}")
    if layers is None:
        layers = candidates
    elif isinstance(layers, str) or not all(name in candidates for name in layers):
        raise ValueError(
            f"`layers` must be a list of names of plain LSTM/GRU layers of the model "
            f"({candidates}); received {layers!r}"
        )
    if not isinstance(only_if_smaller, bool):
        raise TypeError(f"`only_if_smaller` must be a bool; received {only_if_smaller!r}")
    return set(layers)


def _factorise(layer, rank, energy, only_if_smaller):
    weights = layer.get_weights()
    kernel = weights[0].astype(np.float64)
    fan_in, width = kernel.shape
    u, s, vt = np.linalg.svd(kernel, full_matrices=False)
    r = _choose_rank(s, rank, energy)
    a = (u[:, :r] * s[:r]).astype(np.float32)
    b = vt[:r].astype(np.float32)
    error = float(np.linalg.norm(kernel - a.astype(np.float64) @ b) / max(np.linalg.norm(kernel), 1e-30))
    before = layer.count_params()
    after = before - fan_in * width + r * (fan_in + width)
    factorised = after < before or not only_if_smaller
    info = LowRankInfo(r, len(s), before, after if factorised else before,
                       error if factorised else 0.0, factorised)
    return info, ([a], [b, *weights[1:]]) if factorised else None


def _fresh_config(layer):
    config = layer.get_config()
    config.pop("batch_input_shape", None)
    return config


def low_rank(model, *, rank=None, energy=None, layers=None, only_if_smaller=True):
    """Factorise the input kernel of plain LSTM/GRU layers by truncated SVD.

    Args:
      model: a tf_keras Sequential or functional model (not modified).
      rank: int >= 1 (clipped to the full rank), or ``{layer_name: int}``.
      energy: float in (0, 1]: per layer, the smallest rank whose singular values keep
        this share of ``sum(s**2)``. Give exactly one of ``rank`` and ``energy``.
      layers: names of the top-level ``LSTM``/``GRU`` layers to factorise (default: all,
        or the keys of a ``rank`` dict).
      only_if_smaller: bool, default True: leave a layer whole when ``r * (in + k*u)``
        is not below ``in * k*u``. False factorises anyway (to test exactness).

    Returns:
      ``(new_model, info)``: a model of the same kind with a ``Dense(r, use_bias=False)``
      named ``{layer}_low_rank`` before each factorised layer, and
      ``{layer_name: LowRankInfo}`` for every layer considered.

    Example:

    >>> lstm = keras.layers.LSTM(16, name="lstm")
    >>> model = keras.Sequential([keras.Input((6, 40)), lstm, keras.layers.Dense(3)])
    >>> small, info = low_rank(model, rank=4)
    >>> info["lstm"].params_after < info["lstm"].params_before
    True
    """
    selected = _check_arguments(model, rank, energy, layers, only_if_smaller)
    info = {}

    def replace(call):
        layer = call.layer
        if layer.name not in selected:
            return None
        layer_rank = rank.get(layer.name) if isinstance(rank, dict) else rank
        info[layer.name], plan = _factorise(layer, layer_rank, energy, only_if_smaller)
        if plan is None:
            return None
        dense = keras.layers.Dense(info[layer.name].rank, use_bias=False, name=f"{layer.name}_low_rank")
        recurrent = type(layer).from_config(_fresh_config(layer))
        outputs = call.call(recurrent, first=dense(call.args[0]))
        dense.set_weights(plan[0])
        recurrent.set_weights(plan[1])
        return outputs

    return rebuild(model, replace), info
