"""Training helpers for compress(): data checks, the two-learning-rate trainer, best weights."""

import numpy as np

from tf_vib._keras import keras, tf
from tf_vib.schedules import vib_layers

__all__ = [
    "as_arrays",
    "check_data",
    "labels_of",
    "accuracy",
    "stratified_holdout",
    "resolve_loss",
    "TwoRateTrainer",
    "BestWeights",
    "vib_layers",
]


def as_arrays(data, argument, input_rank):
    """``(x, y)`` NumPy arrays from a tuple of arrays or a ``tf.data.Dataset`` of (x, y).

    A dataset whose inputs have the model's rank is taken as batched, one rank lower as
    unbatched. compress() works on data held in memory.
    """
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not isinstance(spec, tuple) or len(spec) < 2:
            raise ValueError(f"`{argument}` must yield (x, y) pairs; its elements are {spec}")
        rank = len(spec[0].shape)
        if rank not in (input_rank, input_rank - 1):
            raise ValueError(
                f"`{argument}` yields inputs of rank {rank}; the model takes rank {input_rank} "
                f"(batched) or {input_rank - 1} (unbatched) elements"
            )
        pairs = [(np.asarray(e[0]), np.asarray(e[1])) for e in data.as_numpy_iterator()]
        if not pairs:
            raise ValueError(f"`{argument}` is an empty dataset")
        join = np.concatenate if rank == input_rank else np.stack
        return _checked(join([p[0] for p in pairs]), join([p[1] for p in pairs]), argument)
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(
            f"`{argument}` must be an (x, y) tuple of arrays or a tf.data.Dataset of (x, y); "
            f"received {type(data).__name__}"
        )
    return _checked(np.asarray(data[0]), np.asarray(data[1]), argument)


def _checked(x, y, argument):
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"`{argument}` has {x.shape[0]} inputs but {y.shape[0]} labels; they must match"
        )
    if x.shape[0] == 0:
        raise ValueError(f"`{argument}` holds no samples")
    if np.issubdtype(x.dtype, np.number):
        bad = ~np.isfinite(x.astype(np.float64, copy=False)) if np.issubdtype(x.dtype, np.floating) else None
        if bad is not None and bad.any():
            first = np.argwhere(bad)[0]
            raise ValueError(
                f"`{argument}` inputs contain {int(bad.sum())} NaN or infinite values (first at "
                f"index {tuple(int(i) for i in first)}); clean or impute them before compressing"
            )
    else:
        raise TypeError(f"`{argument}` inputs must be numeric; received dtype {x.dtype}")
    return x, y


def check_data(model, x, y, argument):
    """Shapes and labels that fit the model: (batch, ...) inputs and in-range class labels."""
    expected = model.input_shape
    if isinstance(expected, list):
        raise ValueError("tf-vib compress() supports models with one input")
    if x.ndim != len(expected) or any(
        e is not None and e != a for e, a in zip(expected[1:], x.shape[1:], strict=True)
    ):
        raise ValueError(
            f"`{argument}` inputs have shape {x.shape}, but the model expects "
            f"(batch, {', '.join('None' if e is None else str(e) for e in expected[1:])})"
        )
    n_classes = model.output_shape[-1]
    labels = labels_of(y, n_classes, argument)
    return labels


def labels_of(y, n_classes, argument="y"):
    """Integer class labels from sparse or one-hot ``y``, checked against ``n_classes``."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == n_classes and n_classes > 1:
        return np.argmax(y, axis=1)
    flat = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if flat.ndim != 1:
        raise ValueError(
            f"`{argument}` labels have shape {y.shape}; expected (n,) class indices or "
            f"(n, {n_classes}) one-hot rows"
        )
    if not np.issubdtype(flat.dtype, np.number) or np.any(flat != np.round(flat)):
        raise ValueError(f"`{argument}` labels must be integer class indices; received dtype {flat.dtype}")
    low, high = flat.min(), flat.max()
    if low < 0 or high >= n_classes:
        raise ValueError(
            f"`{argument}` labels range over [{low:g}, {high:g}], but the model has {n_classes} "
            f"outputs: labels must lie in [0, {n_classes - 1}]"
        )
    return flat.astype(np.int64)


def accuracy(model, x, labels, batch_size=256):
    predictions = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(predictions, axis=-1) == labels))


def stratified_holdout(labels, fraction, seed):
    """Indices (train, held out) with about ``fraction`` of every class held out."""
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = int(round(fraction * len(members)))
        if len(members) > 1:
            count = min(max(count, 1), len(members) - 1)
        else:
            count = 0
        held.extend(members[:count])
    held = np.sort(np.asarray(held, dtype=np.int64))
    train = np.setdiff1d(np.arange(len(labels)), held)
    return train, held


def resolve_loss(model, loss):
    """The loss to train with: ``loss`` if given, else the compiled model's."""
    if loss is None:
        loss = getattr(model, "loss", None)
    if loss is None:
        raise ValueError(
            "`loss` is required when `model` is not compiled: pass e.g. "
            "loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)"
        )
    try:
        return keras.losses.get(loss)
    except ValueError as error:
        raise ValueError(f"`loss` {loss!r} is not a Keras loss: {error}") from None


class TwoRateTrainer(keras.Model):
    """Trains ``inner`` with one Adam for the weights and another for the VIB masks.

    The paper gives the mask parameters a much higher learning rate (5e-2 against
    1e-5..1e-3). The loss is the compiled loss plus ``inner.losses`` (the weighted KL
    terms); ``kl`` is logged beside it.
    """

    def __init__(self, inner, *, learning_rate, mask_learning_rate):
        super().__init__(name=f"{inner.name}_trainer")
        self.inner = inner
        self.mask_optimizer = keras.optimizers.Adam(mask_learning_rate)
        self.weight_learning_rate = learning_rate
        self._mask_refs = {v.ref() for layer in vib_layers(inner) for v in layer.mask_variables}
        self.kl_tracker = keras.metrics.Mean(name="kl")

    def call(self, inputs, training=None):
        return self.inner(inputs, training=training)

    def train_step(self, data):
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred)
        variables = self.trainable_variables
        gradients = tape.gradient(loss, variables)
        weights, masks = [], []
        for gradient, variable in zip(gradients, variables, strict=True):
            if gradient is not None:
                (masks if variable.ref() in self._mask_refs else weights).append((gradient, variable))
        if weights:
            self.optimizer.apply_gradients(weights)
        if masks:
            self.mask_optimizer.apply_gradients(masks)
        kl = tf.add_n(self.inner.losses) if self.inner.losses else tf.constant(0.0)
        self.kl_tracker.update_state(kl)
        return self.compute_metrics(x, y, y_pred, None)

    @property
    def metrics(self):
        return super().metrics + [self.kl_tracker]


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the best epoch by a score function of the logs; restores them at the end."""

    def __init__(self, score, model_to_save=None):
        super().__init__()
        self.score = score
        self.model_to_save = model_to_save
        self.best_score = None
        self.best_epoch = None
        self.best_weights = None

    def _target(self):
        return self.model_to_save if self.model_to_save is not None else self.model

    def on_epoch_end(self, epoch, logs=None):
        score = self.score(epoch, logs or {})
        if score is not None and (self.best_score is None or score > self.best_score):
            self.best_score, self.best_epoch = score, epoch
            self.best_weights = [w.copy() for w in self._target().get_weights()]

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self._target().set_weights(self.best_weights)
