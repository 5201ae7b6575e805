"""Low-rank factorisation of a recurrent layer's input and recurrent kernels.

docs/method.md section 6: the input-to-hidden matrix ``W_x`` (``in x k*u``, ``k`` gate blocks)
of an LSTM (k = 4) or GRU (k = 3) is replaced by its truncated SVD::

    W_x ~ (U_r S_r) V_r^T

and ``x W_x`` becomes a bias-free ``Dense(r)`` with kernel ``U_r S_r`` followed by the same
recurrent layer with input kernel ``V_r^T`` (``r x k*u``). Both are standard layers, so
the model still converts to TFLite's fused LSTM op. It saves parameters only when
``r * (in + k*u) < in * k*u``.

An LSTM's recurrent kernel ``W_h`` (``u x 4u``) is factorised the same way into the two
factors of a `tf_vib.layers.LowRankLSTMCell` (``kernels="recurrent"`` or ``"both"``): it saves
parameters when ``r < 0.8 u``, but TFLite's fused LSTM op takes a full ``W_h``, so the model
converts as a loop over time; `merge_low_rank` multiplies the factors back.
"""

import dataclasses
import numbers

import numpy as np

from tf_vib._checks import check_choice
from tf_vib._graph import rebuild
from tf_vib._keras import keras, require_tf_keras_model

__all__ = ["KERNELS", "LowRankInfo", "low_rank", "merge_low_rank", "factor_layers"]

_GATES = {keras.layers.LSTM: 4, keras.layers.GRU: 3}
#: What ``low_rank(kernels=...)`` accepts.
KERNELS = ("input", "recurrent", "both")
#: The name suffix of the ``Dense(r)`` factor put before a layer: part of that layer's cost.
SUFFIX = "_low_rank"
#: The keyword arguments of an LSTM layer that belong to its ``keras.layers.RNN`` wrapper.
_RNN_ARGUMENTS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll", "time_major",
                  "zero_output_for_mask", "name", "trainable", "dtype", "activity_regularizer")


@dataclasses.dataclass(frozen=True)
class LowRankInfo:
    """What ``low_rank`` did to one layer.

    ``relative_error`` is ``||W_x - A B||_F / ||W_x||_F`` for the float32 factors ``A``
    (the Dense kernel) and ``B`` (the new input kernel); ``params_*`` count the recurrent
    layer plus, after, its Dense. ``factorised`` is False when the rank saves nothing.
    """

    rank: int
    full_rank: int
    kernel: str = dataclasses.field(default="input", kw_only=True)
    params_before: int
    params_after: int
    relative_error: float
    factorised: bool


def _choose_rank(singular, rank, energy):
    if rank is not None:
        return min(rank, len(singular))
    share = np.cumsum(singular**2) / max(np.sum(singular**2), np.finfo(float).tiny)
    return int(min(np.searchsorted(share, energy - 1e-12) + 1, len(singular)))


def _check_arguments(model, rank, energy, layers, only_if_smaller, kernels):
    require_tf_keras_model(model)
    check_choice("kernels", kernels, KERNELS)
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
    if kernels != "input":
        for name in layers:
            layer = model.get_layer(name)
            for argument in ("recurrent_regularizer", "recurrent_constraint"):
                if type(layer) is keras.layers.LSTM and getattr(layer, argument) is not None:
                    raise ValueError(
                        f"`kernels={kernels!r}`: layer {name!r} has a {argument}, which acts on the full "
                        "recurrent matrix the factors replace; pass kernels=\"input\" or leave the layer "
                        "out of `layers`")
    return set(layers)


def _svd(matrix, layer, rank, energy, only_if_smaller, kernel):
    """``(info, (a, b) or None)``: the truncated SVD ``a @ b`` of one of ``layer``'s kernels."""
    matrix = matrix.astype(np.float64)
    fan_in, width = matrix.shape
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    r = _choose_rank(s, rank, energy)
    a = (u[:, :r] * s[:r]).astype(np.float32)
    b = vt[:r].astype(np.float32)
    error = float(np.linalg.norm(matrix - a.astype(np.float64) @ b) / max(np.linalg.norm(matrix), 1e-30))
    before = layer.count_params()
    after = before - fan_in * width + r * (fan_in + width)
    factorised = after < before or not only_if_smaller
    info = LowRankInfo(r, len(s), before, after if factorised else before,
                       error if factorised else 0.0, factorised, kernel=kernel)
    return info, (a, b) if factorised else None


def _lstm_split(config):
    """An LSTM layer's config as ``(cell keyword arguments, RNN keyword arguments)``."""
    config = dict(config)
    config.pop("batch_input_shape", None)
    config.pop("implementation", None)
    rnn = {k: config.pop(k) for k in _RNN_ARGUMENTS if k in config}  # Layer() reads a serialized regularizer
    return config, rnn


def _rnn_config(layer):
    """A ``keras.layers.RNN(LowRankLSTMCell)``'s arguments back as an ``LSTM`` config."""
    cell = layer.cell.get_config()
    cell.pop("rank")
    rnn = {k: v for k, v in layer.get_config().items() if k in _RNN_ARGUMENTS}
    return {**cell, **rnn, "activity_regularizer": layer.activity_regularizer}  # not in RNN's config


def _fresh_config(layer):
    config = layer.get_config()
    config.pop("batch_input_shape", None)
    return config


def low_rank(model, *, rank=None, energy=None, layers=None, only_if_smaller=True, kernels="input"):
    """Factorise the input (and LSTMs' recurrent) kernels of plain LSTM/GRU layers by SVD.

    Args:
      model: a tf_keras Sequential or functional model (not modified).
      rank: int >= 1 (clipped to the full rank), or ``{layer_name: int}``: the same rank for
        each kernel of a layer.
      energy: float in (0, 1]: per kernel, the smallest rank whose singular values keep
        this share of ``sum(s**2)``. Give exactly one of ``rank`` and ``energy``.
      layers: names of the top-level ``LSTM``/``GRU`` layers to factorise (default: all,
        or the keys of a ``rank`` dict).
      only_if_smaller: bool, default True: leave a kernel whole when its factors are not
        smaller than it. False factorises anyway (to test exactness).
      kernels: ``"input"`` (default), ``"recurrent"`` or ``"both"``. The recurrent kernel is
        factorised in LSTM layers only (a GRU's recurrent kernel feeds its reset gate
        before the candidate's product); such a layer becomes
        ``keras.layers.RNN(tf_vib.layers.LowRankLSTMCell(...))`` with the LSTM's settings.

    Returns:
      ``(new_model, info)``: a model of the same kind with a ``Dense(r, use_bias=False)``
      named ``{layer}_low_rank`` before each layer whose input kernel was factorised, and
      ``{layer_name: LowRankInfo}`` for every layer considered (its input kernel), plus
      ``{layer_name + "/recurrent": LowRankInfo}`` for each LSTM whose recurrent kernel was
      considered. Each row's ``params_*`` count the layer with that one kernel factorised.

    Example:

    >>> lstm = keras.layers.LSTM(16, name="lstm")
    >>> model = keras.Sequential([keras.Input((6, 40)), lstm, keras.layers.Dense(3)])
    >>> small, info = low_rank(model, rank=4)
    >>> info["lstm"].params_after < info["lstm"].params_before
    True
    >>> both, info = low_rank(model, rank=4, kernels="both")
    >>> type(both.get_layer("lstm").cell).__name__, both.count_params() < small.count_params()
    ('LowRankLSTMCell', True)
    """
    selected = _check_arguments(model, rank, energy, layers, only_if_smaller, kernels)
    info = {}

    def replace(call):
        layer = call.layer
        if layer.name not in selected:
            return None
        layer_rank = rank.get(layer.name) if isinstance(rank, dict) else rank
        weights = layer.get_weights()
        inputs = None
        if kernels != "recurrent":
            info[layer.name], inputs = _svd(weights[0], layer, layer_rank, energy, only_if_smaller, "input")
        recurrent = None
        if kernels != "input" and type(layer) is keras.layers.LSTM:
            info[f"{layer.name}/recurrent"], recurrent = _svd(weights[1], layer, layer_rank, energy,
                                                              only_if_smaller, "recurrent")
        if inputs is None and recurrent is None:
            return None
        first = call.args[0]
        if inputs is not None:
            dense = keras.layers.Dense(info[layer.name].rank, use_bias=False, name=f"{layer.name}{SUFFIX}")
            first = dense(first)
            dense.set_weights([inputs[0]])
            weights[0] = inputs[1]
        if recurrent is None:
            new = type(layer).from_config(_fresh_config(layer))
        else:
            from tf_vib.layers.low_rank_lstm import LowRankLSTMCell

            cell, rnn = _lstm_split(layer.get_config())
            new = keras.layers.RNN(LowRankLSTMCell(rank=recurrent[0].shape[1], **cell), **rnn)
            weights[1:2] = list(recurrent)
        outputs = call.call(new, first=first)
        new.set_weights(weights)
        return outputs

    return rebuild(model, replace), info


def merge_low_rank(model):
    """Multiply `LowRankLSTMCell` factors back into plain ``LSTM`` layers (same function).

    The ``Dense`` input factors stay (they convert to TFLite as they are); what changes is
    that each LSTM takes a full recurrent kernel again, so that it converts to TFLite's
    fused LSTM op. Returns a new model; ``model`` is not modified.
    """
    from tf_vib.layers.low_rank_lstm import LowRankLSTMCell

    require_tf_keras_model(model)

    def replace(call):
        layer = call.layer
        if not isinstance(layer, keras.layers.RNN) or not isinstance(layer.cell, LowRankLSTMCell):
            return None
        kernel, left, right, *bias = layer.get_weights()
        new = keras.layers.LSTM.from_config(_rnn_config(layer))
        outputs = call.call(new)
        new.set_weights([kernel, left @ right, *bias])
        return outputs

    return rebuild(model, replace)


def factor_layers(model):
    """The names of ``model``'s ``Dense`` input factors (``{layer}_low_rank``), by the layer they feed."""
    return {layer.name[: -len(SUFFIX)]: layer.name for layer in model.layers
            if isinstance(layer, keras.layers.Dense) and layer.name.endswith(SUFFIX)}
