"""tfmot's magnitude pruning and weight clustering, the stages that follow VIB.

Each stage takes a plain tf_keras model, fine-tunes a copy of it (the input model is
never modified; `_finetune` does the training) and returns ``(plain_model, info)``: the
result carries no tfmot wrapper, so the stages chain, and the model exports as it came in.
Data sets are batched ``tf.data.Dataset`` objects of ``(x, y)``.
"""

import dataclasses
import math

import numpy as np
import tensorflow_model_optimization as tfmot

from tf_vib._checks import check_float, check_int
from tf_vib._keras import keras
from tf_vib.compress._finetune import (
    KeepZeros,
    check_common,
    copy_model,
    fit,
    kernels,
    steps_per_epoch,
)
from tf_vib.layers.vib_rnn import VIBRNN

__all__ = ["ClusterInfo", "PruneInfo", "cluster", "magnitude_prune"]

_PRUNABLE = (keras.layers.Dense, keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN,
             keras.layers.Conv1D)
_BUILTIN_CELLS = (keras.layers.LSTMCell, keras.layers.GRUCell, keras.layers.SimpleRNNCell)


@dataclasses.dataclass(frozen=True)
class PruneInfo:
    """``magnitude_prune``'s result: counts over all weights, and the zero fraction of
    each pruned layer's kernels (``layer_sparsity``) and of each pruned weight."""

    nonzero_params: int
    total_params: int
    layer_sparsity: dict
    weight_sparsity: dict
    end_step: int
    frequency: int
    history: dict


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    """``cluster``'s result: distinct values of every weight, and which were clustered."""

    n_clusters: int
    unique_values: dict
    clustered_weights: tuple
    history: dict



def _key(layer, weight):
    """``layer/kernel``: tfmot's stripped layers lose the layer name in their weight names."""
    return f"{layer.name}/{weight.name.split('/')[-1].split(':')[0]}"


def _is_prunable(layer):
    if type(layer) in _PRUNABLE:
        return True
    if isinstance(layer, VIBRNN):  # a PrunableLayer itself
        return True
    cell = getattr(layer, "cell", None)
    return type(layer) is keras.layers.RNN and (
        type(cell) in _BUILTIN_CELLS or isinstance(cell, tfmot.sparsity.keras.PrunableLayer)
    )


def magnitude_prune(model, train_ds, *, sparsity, epochs, validation_ds=None, learning_rate=1e-3,
                    loss=None, metrics=("accuracy",), begin_step=0, teacher=None,
                    distillation=None, verbose=1):
    """Magnitude pruning (Han et al. 2015, docs/method.md section 4) through tfmot.

    Wraps every Dense, LSTM, GRU, SimpleRNN, Conv1D (and RNN of a prunable cell) of a copy
    of ``model`` with ``tfmot.sparsity.keras.prune_low_magnitude`` under tfmot's
    ``PolynomialDecay``::

        s(t) = sparsity * (1 - (1 - (t - begin_step) / (end_step - begin_step)) ** 3)

    with ``end_step`` at about 70% of the training steps (rounded up to a multiple of the
    pruning frequency, so the last mask update reaches ``sparsity``), fine-tunes it with the
    ``UpdatePruningStep`` callback and strips the wrappers.

    Args:
      model: a tf_keras Sequential or functional model (not modified).
      train_ds: batched ``tf.data.Dataset`` of ``(x, y)``, finite.
      sparsity: float in (0, 1), the final fraction of zeros in each pruned kernel, or a
        dict ``{layer_name: float}`` to prune only those layers, each to its own target
        (a small input kernel is far less redundant than the recurrent one).
      epochs: int >= 1.
      validation_ds: optional batched dataset.
      learning_rate: float > 0, default 1e-3 (Adam).
      loss: the training loss (name or object); required unless ``teacher`` is given.
      metrics: list of metrics, default ``("accuracy",)``.
      begin_step: int >= 0, default 0; must come before the end step.
      teacher: optional tf_keras model: fine-tune with ``distillation_loss`` against it
        (through a ``Distiller``) instead of ``loss``.
      distillation: optional dict of ``alpha``, ``beta``, ``temperature`` for the teacher.
      verbose: 0, 1 or 2, passed to ``fit``.

    Returns:
      ``(plain_model, PruneInfo)``; the model is not compiled.
    """
    check_common(model, train_ds, validation_ds, epochs, learning_rate, loss, metrics, verbose,
                  teacher, distillation)
    work = copy_model(model)
    prunable = [layer.name for layer in work.layers if _is_prunable(layer)]
    if not prunable:
        raise ValueError(f"`model` {model.name!r} has no Dense, LSTM, GRU, SimpleRNN or Conv1D layer to prune")
    if isinstance(sparsity, dict):
        if not sparsity or set(sparsity) - set(prunable):
            raise ValueError(
                f"`sparsity` as a dict must name prunable layers of the model ({prunable}); "
                f"received {sparsity!r}"
            )
        targets = {name: check_float("sparsity", v, low=0.0, high=1.0) for name, v in sparsity.items()}
    else:
        targets = dict.fromkeys(prunable, check_float("sparsity", sparsity, low=0.0, high=1.0))
    begin_step = check_int("begin_step", begin_step, 0)
    total = epochs * steps_per_epoch(train_ds)
    span = round(0.7 * total) - begin_step
    if span < 1:
        raise ValueError(
            f"`begin_step` must be below 70% of the {total} training steps (the pruning ramp "
            f"ends there); received begin_step={begin_step}"
        )
    frequency = max(1, min(100, span // 10))
    end_step = begin_step + frequency * math.ceil(span / frequency)

    def wrap(layer):
        if layer.name not in targets:
            return layer
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0, final_sparsity=targets[layer.name], begin_step=begin_step,
            end_step=end_step, frequency=frequency,
        )
        return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)

    pruned = keras.models.clone_model(work, clone_function=wrap)
    history = fit(pruned, train_ds, validation_ds=validation_ds, epochs=epochs,
                  learning_rate=learning_rate, loss=loss, metrics=metrics, verbose=verbose,
                   callbacks=[tfmot.sparsity.keras.UpdatePruningStep()], teacher=teacher,
                   distillation=distillation)
    plain = tfmot.sparsity.keras.strip_pruning(pruned)
    weight_sparsity, layer_sparsity = {}, {}
    for layer in plain.layers:
        if layer.name not in targets:
            continue
        weights = kernels([layer])
        for w in weights:
            weight_sparsity[_key(layer, w)] = float(np.mean(w.numpy() == 0))
        zeros = sum(int(np.sum(w.numpy() == 0)) for w in weights)
        layer_sparsity[layer.name] = zeros / max(1, sum(int(np.prod(w.shape)) for w in weights))
    weights = plain.get_weights()
    info = PruneInfo(
        nonzero_params=int(sum(np.count_nonzero(w) for w in weights)),
        total_params=int(sum(w.size for w in weights)),
        layer_sparsity=layer_sparsity,
        weight_sparsity=weight_sparsity,
        end_step=end_step,
        frequency=frequency,
        history=history,
    )
    return plain, info


# -- weight clustering ---------------------------------------------------------------------


def _clusterable_weights(layer):
    """The weights tfmot clusters in ``layer`` (empty if it cannot cluster the layer)."""
    if type(layer) in (keras.layers.Dense, keras.layers.Conv1D):
        return [layer.kernel]
    rnn = (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN, keras.layers.RNN)
    if type(layer) in rnn and type(layer.cell) in _BUILTIN_CELLS:
        return [layer.cell.kernel, layer.cell.recurrent_kernel]
    return []


def cluster(model, train_ds, *, n_clusters, epochs, validation_ds=None, learning_rate=1e-4,
            loss=None, metrics=("accuracy",), preserve_sparsity=True, teacher=None,
            distillation=None, verbose=1):
    """Weight sharing (Deep Compression, docs/method.md section 5) through tfmot clustering.

    Every weight tensor tfmot can cluster (kernels of Dense and Conv1D, kernel and
    recurrent kernel of LSTM, GRU, SimpleRNN) in a layer whose clustered weights all have
    more than ``n_clusters`` (non-zero, with ``preserve_sparsity``) values is replaced by
    ``n_clusters`` shared values (linearly spaced initial centroids, Han et al.'s best),
    fine-tuned, and stripped: each keeps at most ``n_clusters`` distinct values. Other
    layers (VIB cells, custom layers, small kernels) are left as they are.

    Args:
      model: a tf_keras Sequential or functional model (not modified).
      train_ds: batched ``tf.data.Dataset`` of ``(x, y)``.
      n_clusters: int >= 2 (Deep Compression: 32 for fully connected layers, 256 for convs).
      epochs: int >= 1 of fine-tuning.
      validation_ds, learning_rate (default 1e-4), loss, metrics, teacher, distillation,
        verbose: as in ``magnitude_prune``.
      preserve_sparsity: bool, default True: zeros (from pruning) stay zero, in clustered
        kernels (tfmot's sparsity-preserving clustering; 0 is one of the ``n_clusters``
        values) and in the kernels of the layers left unclustered.

    Returns:
      ``(plain_model, ClusterInfo)``; the model is not compiled.
    """
    check_common(model, train_ds, validation_ds, epochs, learning_rate, loss, metrics, verbose,
                  teacher, distillation)
    n_clusters = check_int("n_clusters", n_clusters, 2)
    if not isinstance(preserve_sparsity, bool):
        raise TypeError(f"`preserve_sparsity` must be a bool; received {preserve_sparsity!r}")
    work = copy_model(model)

    def enough(w):
        values = w.numpy()
        return (np.count_nonzero(values) if preserve_sparsity else values.size) > n_clusters

    chosen = {layer.name for layer in work.layers
              if _clusterable_weights(layer) and all(enough(w) for w in _clusterable_weights(layer))}
    if not chosen:
        raise ValueError(
            f"`model` {model.name!r} has no Dense, Conv1D, LSTM, GRU or SimpleRNN weight with "
            f"more than n_clusters={n_clusters} values to cluster"
        )
    # Han et al. found linear initialisation best (it keeps the rare large weights); k-means++
    # also fails outright on a sparse kernel with fewer non-zero values than clusters.
    init = tfmot.clustering.keras.CentroidInitialization.LINEAR

    def wrap(layer):
        if layer.name in chosen:
            return tfmot.clustering.keras.cluster_weights(
                layer, number_of_clusters=n_clusters, cluster_centroids_init=init,
                preserve_sparsity=preserve_sparsity)
        return layer

    clustered = keras.models.clone_model(work, clone_function=wrap)
    others = [layer for layer in work.layers if layer.name not in chosen]
    history = fit(clustered, train_ds, validation_ds=validation_ds, epochs=epochs,
                  learning_rate=learning_rate, loss=loss, metrics=metrics, verbose=verbose,
                  callbacks=[KeepZeros(kernels(others))] if preserve_sparsity else [],
                  teacher=teacher, distillation=distillation)
    plain = tfmot.clustering.keras.strip_clustering(clustered)
    names = tuple(_key(layer, w) for layer in plain.layers if layer.name in chosen
                  for w in _clusterable_weights(layer))
    unique = {_key(layer, w): int(np.unique(w.numpy()).size)
              for layer in plain.layers for w in layer.weights}
    return plain, ClusterInfo(n_clusters, unique, names, history)
