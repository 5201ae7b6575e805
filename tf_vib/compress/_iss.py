"""Intrinsic Sparse Structures: group Lasso over the weights tied to each hidden unit.

Wen et al., "Learning intrinsic sparse structures within long short-term memory"
(ICLR 2018), docs/method.md section 3::

    R(w) = lambda * sum_k ||w_k||_2

Group ``k`` of a recurrent layer with ``u`` units and ``n`` gate blocks (LSTM 4, GRU 3)
holds column ``k`` of every gate block of ``kernel``, ``recurrent_kernel`` and ``bias``,
row ``k`` of ``recurrent_kernel``, and row ``k`` of the input kernel of every layer that
reads the layer's output (Dense, Conv1D, LSTM, GRU, SimpleRNN, RNN of a VIB cell; through the
registry's carriers). Each weight counts once in its group (the diagonal of ``recurrent_kernel`` is
both a row and a column). A unit whose whole group is zero outputs h = 0 at every step
from a zero state: an LSTM's candidate is tanh(0) = 0 so its cell stays 0; a GRU's
candidate is tanh(0) = 0 so its state stays 0. It can then be removed.
"""

import dataclasses

import numpy as np

from tf_vib._checks import check_float
from tf_vib._graph import tensor_users
from tf_vib._keras import keras, require_tf_keras_model, tf
from tf_vib.layers.vib_gru import VIBGRUCell
from tf_vib.layers.vib_lstm import VIBLSTMCell
from tf_vib.layers.vib_simple_rnn import VIBSimpleRNNCell
from tf_vib.registry import CARRIER, rule_of

__all__ = ["ISSPenalty", "FreezeZeros", "add_iss_penalty", "iss_group_norms", "zero_small_groups"]

_GATES = (
    (keras.layers.LSTMCell, 4), (VIBLSTMCell, 4), (keras.layers.GRUCell, 3), (VIBGRUCell, 3),
    (keras.layers.SimpleRNNCell, 1), (VIBSimpleRNNCell, 1),
)
_TINY = 1e-20  # keeps the gradient of ||w_k|| finite (and zero) at an all-zero group


@dataclasses.dataclass
class _Part:
    """Weights of ``variable`` in the groups: ``cols`` of ``gates`` blocks, or rows on ``axis``."""

    variable: tf.Variable
    kind: str
    gates: int = 1
    axis: int = 0


@dataclasses.dataclass
class _Group:
    name: str
    units: int
    parts: list


def _gates_of(layer):
    if not isinstance(layer, keras.layers.RNN) or isinstance(layer, keras.layers.Bidirectional):
        return None
    return next((n for cls, n in _GATES if isinstance(layer.cell, cls)), None)


def _input_kernel(layer):
    """The kernel whose rows are this layer's input features, or None."""
    if isinstance(layer, (keras.layers.Dense, keras.layers.Conv1D)):
        return layer.kernel
    if _gates_of(layer):
        return layer.cell.kernel
    return None


def _consumer_kernels(model, layer):
    users = tensor_users(model)
    kernels, frontier = [], [t for node in layer._inbound_nodes for t in tf.nest.flatten(node.outputs)]
    while frontier:
        for user in (node.layer for node in users.get(id(frontier.pop()), [])):
            if rule_of(user).role == CARRIER and not isinstance(user, keras.layers.Concatenate):
                frontier.extend(t for node in user._inbound_nodes for t in tf.nest.flatten(node.outputs))
            elif _input_kernel(user) is not None and all(k is not _input_kernel(user) for k in kernels):
                kernels.append(_input_kernel(user))
    return kernels


def _groups(model, include_bias=True):
    require_tf_keras_model(model)
    groups = []
    for layer in model.layers:
        gates = _gates_of(layer)
        if gates is None:
            continue
        cell = layer.cell
        parts = [_Part(cell.kernel, "cols", gates), _Part(cell.recurrent_kernel, "cols", gates),
                 _Part(cell.recurrent_kernel, "rows", axis=0)]
        if include_bias and cell.bias is not None:
            parts.append(_Part(cell.bias, "cols", gates))
        for kernel in _consumer_kernels(model, layer):
            parts.append(_Part(kernel, "rows", axis=len(kernel.shape) - 2))
        groups.append(_Group(layer.name, cell.units, parts))
    return groups


def _per_unit(value, part, units, reduce):
    """Reduce ``value`` (the part's weights, squared or absolute) to one number per unit."""
    if part.kind == "cols":
        blocks = tf.reshape(value, (-1, part.gates, units))
        return reduce(blocks, axis=(0, 1))
    rows = tf.reshape(tf.experimental.numpy.moveaxis(value, part.axis, 0), (units, -1))
    return reduce(rows, axis=1)


def _squared_norms(group):
    total = tf.add_n([_per_unit(tf.square(p.variable), p, group.units, tf.reduce_sum)
                      for p in group.parts])
    recurrent = group.parts[1]
    blocks = tf.reshape(tf.square(recurrent.variable), (group.units, recurrent.gates, group.units))
    diagonal = tf.linalg.diag_part(tf.transpose(blocks, (1, 0, 2)))  # R[k, g*u + k] per gate
    return total - tf.reduce_sum(diagonal, axis=0)


def iss_group_norms(model, *, include_bias=True):
    """The L2 norm of every unit's ISS group, per recurrent layer.

    Returns:
      ``{layer_name: float64 array of shape (units,)}`` for every LSTM, GRU and RNN of an
      LSTM, GRU or VIB cell at the top level of ``model``.
    """
    return {g.name: np.sqrt(np.maximum(_squared_norms(g).numpy(), 0.0)).astype(np.float64)
            for g in _groups(model, include_bias)}


class ISSPenalty:
    """The group-Lasso penalty ``strength * sum_k ||w_k||_2`` over a model's recurrent units.

    A zero-argument callable for ``model.add_loss``. Its gradient is Wen et al.'s
    ``lambda * w_k / ||w_k||`` (zero for an all-zero group).

    Args:
      model: a built tf_keras Sequential or functional model; the penalty reads its
        variables, so add it to that same model.
      strength: float > 0, the paper's lambda (0.0025 .. 0.003 per word on PTB; scale to
        your loss).
      include_bias: bool, default True: the bias columns belong to the groups.

    Example:

    >>> model = keras.Sequential([keras.Input((6, 5)), keras.layers.LSTM(8), keras.layers.Dense(3)])
    >>> model.add_loss(ISSPenalty(model, 1e-3))
    """

    def __init__(self, model, strength, *, include_bias=True):
        self.strength = check_float("strength", strength)
        self.groups = _groups(model, bool(include_bias))
        if not self.groups:
            raise ValueError(
                f"`model` {model.name!r} has no LSTM, GRU or RNN(VIB cell) layer at its top "
                "level for the ISS penalty to act on"
            )

    def __call__(self):
        norms = [tf.reduce_sum(tf.sqrt(tf.maximum(_squared_norms(g), _TINY))) for g in self.groups]
        return self.strength * tf.add_n(norms)


def add_iss_penalty(model, strength, *, include_bias=True):
    """Add ``ISSPenalty(model, strength)`` to ``model``'s losses. Mutates ``model``.

    Call it on a model you own (a clone), before ``compile``. Returns the penalty.
    """
    penalty = ISSPenalty(model, strength, include_bias=include_bias)
    model.add_loss(penalty)
    return penalty


def _zero_multipliers(groups, zeroed):
    """One 0/1 array per variable that zeroes the groups of the units in ``zeroed``."""
    multipliers = {}
    for group in groups:
        dead = zeroed.get(group.name)
        if dead is None or not dead.any():
            continue
        alive = (~dead).astype(np.float32)
        for part in group.parts:
            shape = part.variable.shape
            if part.kind == "cols":
                factor = np.tile(alive, part.gates)
            else:
                factor = np.expand_dims(alive, tuple(range(1, len(shape) - part.axis)))
            key = id(part.variable)
            base = multipliers.get(key, (part.variable, np.ones(shape, np.float32)))[1]
            multipliers[key] = (part.variable, base * factor)
    return list(multipliers.values())


def zero_small_groups(model, threshold=1e-4, *, criterion="max_abs", include_bias=True):
    """Set to zero every ISS group whose weights are all small. Mutates ``model``'s weights.

    A group is zeroed when its largest ``|w|`` is below ``threshold``
    (``criterion="max_abs"``, the paper's element rule ``|w| < 1e-4`` applied to the whole
    group, so no partially zeroed group is left), or when its L2 norm is
    (``criterion="l2"``). Call it on a model you own, after training with ``ISSPenalty``.
    Adam does not reach exact zeros: collapsed groups hover at an L2 norm of about the
    learning rate (docs/method.md, section 3), so use ``criterion="l2"`` with a threshold
    of a few learning rates there.

    Returns:
      ``{layer_name: bool array (units,)}``, True for the units whose group is now zero.
    """
    check_float("threshold", threshold)
    if criterion not in ("max_abs", "l2"):
        raise ValueError(f"`criterion` must be 'max_abs' or 'l2'; received {criterion!r}")
    groups = _groups(model, include_bias)
    zeroed = {}
    for group in groups:
        if criterion == "l2":
            size = np.sqrt(np.maximum(_squared_norms(group).numpy(), 0.0))
        else:
            size = np.max([_per_unit(tf.abs(p.variable), p, group.units, tf.reduce_max).numpy()
                           for p in group.parts], axis=0)
        zeroed[group.name] = size < threshold
    for variable, multiplier in _zero_multipliers(groups, zeroed):
        variable.assign(variable.numpy() * multiplier)
    return zeroed


class FreezeZeros(keras.callbacks.Callback):
    """Keeps zeroed ISS groups at zero during fine-tuning (re-zeroes them after each batch).

    Args:
      zeroed: ``{layer_name: bool array}`` from ``zero_small_groups``, or None (default) to
        freeze the groups that are entirely zero when training begins.
      include_bias: bool, default True; as in ``zero_small_groups``.
    """

    def __init__(self, zeroed=None, *, include_bias=True):
        super().__init__()
        if zeroed is not None and not (
            isinstance(zeroed, dict) and all(np.asarray(v).dtype == bool for v in zeroed.values())
        ):
            raise TypeError(
                "`zeroed` must be None or a dict {layer_name: bool array} as returned by "
                f"zero_small_groups; received {zeroed!r:.80}"
            )
        self.zeroed = None if zeroed is None else {k: np.asarray(v) for k, v in zeroed.items()}
        self.include_bias = bool(include_bias)
        self._multipliers = []

    def on_train_begin(self, logs=None):
        groups = _groups(self.model, self.include_bias)
        if self.zeroed is None:
            self.zeroed = {
                g.name: np.max([_per_unit(tf.abs(p.variable), p, g.units, tf.reduce_max).numpy()
                                for p in g.parts], axis=0) == 0
                for g in groups
            }
        unknown = set(self.zeroed) - {g.name for g in groups}
        if unknown:
            raise ValueError(f"`zeroed` names layers that have no ISS groups: {sorted(unknown)}")
        self._multipliers = [(v, tf.constant(m)) for v, m in _zero_multipliers(groups, self.zeroed)]
        self.on_train_batch_end(None)

    def on_train_batch_end(self, batch, logs=None):
        for variable, multiplier in self._multipliers:
            variable.assign(variable * multiplier)
