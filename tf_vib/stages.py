"""The tfmot stages that follow VIB: magnitude pruning, weight clustering, distillation.

Each stage takes a plain tf_keras model, fine-tunes a copy of it (the input model is
never modified) and returns ``(plain_model, info)``: the result carries no tfmot wrapper,
so the stages chain, and the model exports as it came in. Data sets are batched
``tf.data.Dataset`` objects of ``(x, y)``.
"""

import dataclasses
import math
import numbers

import numpy as np
import tensorflow_model_optimization as tfmot

from tf_vib._keras import keras, require_tf_keras_model, tf
from tf_vib.layers.recurrent import VIBRNN

__all__ = [
    "ClusterInfo",
    "DistillInfo",
    "Distiller",
    "PruneInfo",
    "cluster",
    "distill",
    "distillation_loss",
    "magnitude_prune",
    "output_is_softmax",
]

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


@dataclasses.dataclass(frozen=True)
class DistillInfo:
    history: dict


# -- argument checks -----------------------------------------------------------------------


def _check_dataset(name, value, *, optional=False):
    if value is None and optional:
        return None
    if not isinstance(value, tf.data.Dataset):
        raise TypeError(
            f"`{name}` must be a batched tf.data.Dataset of (x, y); received "
            f"{type(value).__name__}: {value!r:.60}"
        )
    return value


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; received {value!r}")
    return int(value)


def _check_float(name, value, low, high=None):
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and np.isfinite(value)
    if not ok or value <= low or (high is not None and value >= high):
        bounds = f"in ({low}, {high})" if high is not None else f"> {low}"
        raise ValueError(f"`{name}` must be a number {bounds}; received {value!r}")
    return float(value)


def _check_common(model, train_ds, validation_ds, epochs, learning_rate, loss, metrics, verbose,
                  teacher=None, distillation=None):
    require_tf_keras_model(model)
    if teacher is not None:
        require_tf_keras_model(teacher, "teacher")
        loss = "distillation"
    if distillation is not None and not (
        isinstance(distillation, dict) and set(distillation) <= {"alpha", "beta", "temperature"}
    ):
        raise ValueError(
            "`distillation` must be None or a dict with keys among 'alpha', 'beta', "
            f"'temperature'; received {distillation!r}"
        )
    _check_dataset("train_ds", train_ds)
    _check_dataset("validation_ds", validation_ds, optional=True)
    _check_int("epochs", epochs, 1)
    _check_float("learning_rate", learning_rate, 0.0)
    if loss is None:
        raise ValueError(
            "`loss` is required unless a `teacher` is given (a Keras loss name or object); "
            "received None"
        )
    if isinstance(metrics, str) or not isinstance(metrics, (list, tuple)):
        raise TypeError(f"`metrics` must be a list or tuple of metrics; received {metrics!r}")
    if verbose not in (0, 1, 2):
        raise ValueError(f"`verbose` must be 0, 1 or 2; received {verbose!r}")


def _steps_per_epoch(dataset):
    cardinality = int(dataset.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise ValueError("`train_ds` must be finite (one epoch per pass); received a repeating dataset")
    if cardinality == tf.data.UNKNOWN_CARDINALITY:
        cardinality = sum(1 for _ in dataset)
    if cardinality < 1:
        raise ValueError("`train_ds` is empty")
    return cardinality


def _copy(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


class _KeepZeros(keras.callbacks.Callback):
    """Re-zeroes, after every batch, the entries of ``variables`` that are zero at the start."""

    def __init__(self, variables):
        super().__init__()
        self.variables = list(variables)

    def on_train_begin(self, logs=None):
        self.masks = [tf.cast(tf.not_equal(v, 0), v.dtype) for v in self.variables]

    def on_train_batch_end(self, batch, logs=None):
        for variable, mask in zip(self.variables, self.masks, strict=True):
            variable.assign(variable * mask)


def _key(layer, weight):
    """``layer/kernel``: tfmot's stripped layers lose the layer name in their weight names."""
    return f"{layer.name}/{weight.name.split('/')[-1].split(':')[0]}"


def _kernels(layers):
    return [w for layer in layers for w in layer.weights if w.name.split("/")[-1].startswith(
        ("kernel", "recurrent_kernel"))]


def _fit(model, train_ds, *, validation_ds, epochs, learning_rate, loss, metrics, verbose,
         callbacks, teacher=None, distillation=None):
    """Fine-tune ``model`` on ``loss``, or, given a ``teacher``, through a ``Distiller``."""
    trainer = model
    if teacher is not None:
        trainer = Distiller(model, teacher, **(distillation or {}))
        loss = None
    trainer.compile(keras.optimizers.Adam(learning_rate), loss=loss, metrics=list(metrics))
    history = trainer.fit(train_ds, validation_data=validation_ds, epochs=epochs,
                          callbacks=callbacks, verbose=verbose)
    return history.history


# -- magnitude pruning ---------------------------------------------------------------------


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
    """Magnitude pruning (Han et al. 2015, method.md section 3) through tfmot.

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
    _check_common(model, train_ds, validation_ds, epochs, learning_rate, loss, metrics, verbose,
                  teacher, distillation)
    work = _copy(model)
    prunable = [layer.name for layer in work.layers if _is_prunable(layer)]
    if not prunable:
        raise ValueError(f"`model` {model.name!r} has no Dense, LSTM, GRU, SimpleRNN or Conv1D layer to prune")
    if isinstance(sparsity, dict):
        if not sparsity or set(sparsity) - set(prunable):
            raise ValueError(
                f"`sparsity` as a dict must name prunable layers of the model ({prunable}); "
                f"received {sparsity!r}"
            )
        targets = {name: _check_float("sparsity", v, 0.0, 1.0) for name, v in sparsity.items()}
    else:
        targets = dict.fromkeys(prunable, _check_float("sparsity", sparsity, 0.0, 1.0))
    begin_step = _check_int("begin_step", begin_step, 0)
    total = epochs * _steps_per_epoch(train_ds)
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
    history = _fit(pruned, train_ds, validation_ds=validation_ds, epochs=epochs,
                   learning_rate=learning_rate, loss=loss, metrics=metrics, verbose=verbose,
                   callbacks=[tfmot.sparsity.keras.UpdatePruningStep()], teacher=teacher,
                   distillation=distillation)
    plain = tfmot.sparsity.keras.strip_pruning(pruned)
    weight_sparsity, layer_sparsity = {}, {}
    for layer in plain.layers:
        if layer.name not in targets:
            continue
        kernels = _kernels([layer])
        for w in kernels:
            weight_sparsity[_key(layer, w)] = float(np.mean(w.numpy() == 0))
        zeros = sum(int(np.sum(w.numpy() == 0)) for w in kernels)
        layer_sparsity[layer.name] = zeros / max(1, sum(int(np.prod(w.shape)) for w in kernels))
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
    """Weight sharing (Deep Compression, method.md section 4) through tfmot clustering.

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
    _check_common(model, train_ds, validation_ds, epochs, learning_rate, loss, metrics, verbose,
                  teacher, distillation)
    n_clusters = _check_int("n_clusters", n_clusters, 2)
    if not isinstance(preserve_sparsity, bool):
        raise TypeError(f"`preserve_sparsity` must be a bool; received {preserve_sparsity!r}")
    work = _copy(model)

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
    history = _fit(clustered, train_ds, validation_ds=validation_ds, epochs=epochs,
                   learning_rate=learning_rate, loss=loss, metrics=metrics, verbose=verbose,
                   callbacks=[_KeepZeros(_kernels(others))] if preserve_sparsity else [],
                   teacher=teacher, distillation=distillation)
    plain = tfmot.clustering.keras.strip_clustering(clustered)
    names = tuple(_key(layer, w) for layer in plain.layers if layer.name in chosen
                  for w in _clusterable_weights(layer))
    unique = {_key(layer, w): int(np.unique(w.numpy()).size)
              for layer in plain.layers for w in layer.weights}
    return plain, ClusterInfo(n_clusters, unique, names, history)


# -- knowledge distillation ----------------------------------------------------------------


def output_is_softmax(model):
    """True when ``model``'s (single) output comes out of a softmax, False for logits."""
    layer = model.outputs[0]._keras_history.layer
    while isinstance(layer, keras.layers.Wrapper):  # tfmot's pruning and clustering wrappers
        layer = layer.layer
    if isinstance(layer, keras.layers.Softmax):
        return True
    return getattr(layer, "activation", None) is keras.activations.softmax


def _as_logits(predictions, is_softmax):
    # log p is a valid logit vector: softmax(log(p) / T) is p tempered by T.
    return tf.math.log(tf.clip_by_value(predictions, 1e-12, 1.0)) if is_softmax else predictions


def distillation_loss(y_true, student_logits, teacher_logits, *, alpha=0.1, beta=0.9,
                      temperature=4.0):
    """Hinton's knowledge-distillation loss (method.md section 5), averaged over the batch::

        alpha * CE(y, softmax(s)) + beta * T**2 * KL(softmax(t / T) || softmax(s / T))

    The ``T**2`` keeps the soft term's gradients on the scale of the hard term's.

    Args:
      y_true: integer class labels, or one-hot labels of the logits' shape.
      student_logits, teacher_logits: logits of the same shape ``(..., classes)``.
      alpha, beta: floats >= 0, the weights of the two terms.
      temperature: float > 0.

    Returns:
      A scalar float32 tensor.
    """
    for name, value in (("alpha", alpha), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
            raise ValueError(f"`{name}` must be a number >= 0; received {value!r}")
    temperature = _check_float("temperature", temperature, 0.0)
    s = tf.convert_to_tensor(student_logits, tf.float32)
    t = tf.convert_to_tensor(teacher_logits, tf.float32)
    y = tf.convert_to_tensor(y_true)
    if y.shape.rank == s.shape.rank and y.shape[-1] == s.shape[-1] and s.shape[-1] != 1:
        hard = keras.losses.categorical_crossentropy(tf.cast(y, tf.float32), s, from_logits=True)
    else:
        hard = keras.losses.sparse_categorical_crossentropy(y, s, from_logits=True)
    soft = keras.losses.kl_divergence(tf.nn.softmax(t / temperature),
                                      tf.nn.softmax(s / temperature))
    return alpha * tf.reduce_mean(hard) + beta * temperature**2 * tf.reduce_mean(soft)


class Distiller(keras.Model):
    """Trains ``student`` against a frozen ``teacher`` with ``distillation_loss``.

    Either model may end in a softmax or in logits (``output_is_softmax``); metrics see the
    student's own outputs. Compile with an optimizer and metrics only (no loss), then fit.
    Only the student's variables are trained; the student's own losses are added.

    Args:
      student, teacher: tf_keras models with outputs of the same shape.
      alpha, beta, temperature: as in ``distillation_loss``.
    """

    def __init__(self, student, teacher, *, alpha=0.1, beta=0.9, temperature=4.0, **kwargs):
        super().__init__(**kwargs)
        require_tf_keras_model(student, "student")
        require_tf_keras_model(teacher, "teacher")
        if student.outputs[0].shape[1:] != teacher.outputs[0].shape[1:]:
            raise ValueError(
                f"`student` and `teacher` must have outputs of the same shape; received "
                f"{student.outputs[0].shape} and {teacher.outputs[0].shape}"
            )
        distillation_loss(np.zeros(1, "int32"), np.zeros((1, 2)), np.zeros((1, 2)),
                          alpha=alpha, beta=beta, temperature=temperature)  # validates them
        self.student, self.teacher = student, teacher
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), float(temperature)
        self._student_softmax = output_is_softmax(student)
        self._teacher_softmax = output_is_softmax(teacher)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def _loss(self, x, y, training):
        predictions = self.student(x, training=training)
        teacher = self.teacher(x, training=False)
        loss = distillation_loss(
            y, _as_logits(predictions, self._student_softmax),
            tf.stop_gradient(_as_logits(teacher, self._teacher_softmax)),
            alpha=self.alpha, beta=self.beta, temperature=self.temperature,
        )
        if self.student.losses:
            loss += tf.add_n(self.student.losses)
        return loss, predictions

    def _results(self, loss, y, predictions):
        self.loss_tracker.update_state(loss)
        self.compiled_metrics.update_state(y, predictions)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss, predictions = self._loss(x, y, True)
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return self._results(loss, y, predictions)

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        loss, predictions = self._loss(x, y, False)
        return self._results(loss, y, predictions)


def distill(student, teacher, train_ds, *, epochs, validation_ds=None, learning_rate=1e-3,
            alpha=0.1, beta=0.9, temperature=4.0, metrics=("accuracy",), preserve_sparsity=True,
            verbose=1):
    """Fine-tune a copy of ``student`` against ``teacher`` (Hinton et al.; method.md section 5).

    Args:
      student: the plain (compressed) tf_keras model (not modified).
      teacher: the reference model, used in inference mode and never trained.
      train_ds, epochs, validation_ds, learning_rate, metrics, verbose: as in
        ``magnitude_prune``.
      alpha, beta, temperature: as in ``distillation_loss``; defaults 0.1, 0.9, 4.
      preserve_sparsity: bool, default True: kernel entries that are zero (pruned) stay
        zero. Clustering is not preserved: distil before ``cluster``, or pass the teacher
        to ``cluster`` itself.

    Returns:
      ``(plain_student, DistillInfo)``: the trained copy of the student (not the
      ``Distiller`` wrapper), not compiled.
    """
    _check_common(student, train_ds, validation_ds, epochs, learning_rate, None, metrics, verbose,
                  teacher, {"alpha": alpha, "beta": beta, "temperature": temperature})
    if not isinstance(preserve_sparsity, bool):
        raise TypeError(f"`preserve_sparsity` must be a bool; received {preserve_sparsity!r}")
    copy = _copy(student)
    history = _fit(copy, train_ds, validation_ds=validation_ds, epochs=epochs,
                   learning_rate=learning_rate, loss=None, metrics=metrics, verbose=verbose,
                   callbacks=[_KeepZeros(_kernels(copy.layers))] if preserve_sparsity else [],
                   teacher=teacher,
                   distillation={"alpha": alpha, "beta": beta, "temperature": temperature})
    return copy, DistillInfo(history)
