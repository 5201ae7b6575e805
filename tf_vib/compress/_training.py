"""Training helpers for compress(): accuracy, losses, the two-learning-rate trainer, best weights.

The data checks are in `tf_vib.compress._data`.
"""

import numpy as np

from tf_vib._keras import keras, tf
from tf_vib.compress._schedules import vib_layers

__all__ = [
    "accuracy",
    "predicted_classes",
    "binary_threshold",
    "resolve_loss",
    "loss_kind",
    "loss_name",
    "TwoRateTrainer",
    "BestWeights",
    "vib_layers",
]


def binary_threshold(model, index):
    """0.5 for a sigmoid output, 0 for a logit."""
    layer = model.outputs[index]._keras_history.layer
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    return 0.5 if getattr(layer, "activation", None) is keras.activations.sigmoid else 0.0


def accuracy(model, x, labels, batch_size=256):
    """The share of correct class predictions; per step for per-step outputs, the mean over
    outputs for a model with several. A one-unit output predicts 1 above its threshold."""
    predictions = tf.nest.flatten(model.predict(x, batch_size=batch_size, verbose=0))
    scores = [np.mean(guess == target) for guess, target in
              zip(predicted_classes(model, predictions), tf.nest.flatten(labels), strict=True)]
    return float(np.mean(scores))


def predicted_classes(model, predictions):
    """The class each output of ``model`` predicts (``predictions``: one array per output,
    flattened): its argmax, or for a one-unit output whether it is above its threshold."""
    return [(p[..., 0] > binary_threshold(model, index)) if p.shape[-1] == 1 else np.argmax(p, axis=-1)
            for index, p in enumerate(predictions)]


def resolve_loss(model, loss):
    """The loss to train with: ``loss`` if given, else the compiled model's; a list or dict
    of losses (one per output) stays one."""
    if loss is None:
        loss = getattr(model, "loss", None)
    if loss is None:
        raise ValueError(
            "`loss` is required when `model` is not compiled: pass e.g. "
            "loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)"
        )
    if isinstance(loss, dict):
        return {name: _one_loss(value) for name, value in loss.items()}
    if isinstance(loss, (list, tuple)):
        return [_one_loss(value) for value in loss]
    return _one_loss(loss)


def _one_loss(loss):
    try:
        return keras.losses.get(loss)
    except ValueError as error:
        raise ValueError(f"`loss` {loss!r} is not a Keras loss: {error}") from None


_LOSS_KINDS = {
    keras.losses.sparse_categorical_crossentropy: "sparse",
    keras.losses.categorical_crossentropy: "categorical",
    keras.losses.categorical_focal_crossentropy: "categorical",
    keras.losses.binary_crossentropy: "binary",
    keras.losses.binary_focal_crossentropy: "binary",
}


def loss_kind(loss):
    """"sparse" (class indices), "categorical" (one-hot rows), "binary" or None (unknown) for
    a resolved loss: a Keras loss object or function."""
    return _LOSS_KINDS.get(getattr(loss, "fn", loss))


def loss_name(loss):
    return type(loss).__name__ if isinstance(loss, keras.losses.Loss) else getattr(loss, "__name__", repr(loss))


class TwoRateTrainer(keras.Model):
    """Trains ``inner`` with the compiled optimizer for the weights and an Adam of its own,
    at ``mask_learning_rate``, for the VIB masks.

    The paper gives the mask parameters a much higher learning rate (docs/method.md). The
    loss is the compiled loss plus ``inner.losses`` (the weighted KL terms); ``kl`` is logged
    beside it.
    """

    def __init__(self, inner, *, mask_learning_rate):
        super().__init__(name=f"{inner.name}_trainer")
        self.inner = inner
        self.mask_optimizer = keras.optimizers.Adam(mask_learning_rate)
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
