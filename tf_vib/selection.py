"""Choosing the compressed model: the smallest candidate that fine-tunes back to accuracy.

During VIB training compress() snapshots the masked model every few epochs. Each
snapshot, stripped at a keep threshold, is a candidate plain model. The masked model's
own validation accuracy (hard gates, no fine-tuning) understates what the plain model
reaches after fine-tuning, so candidates are judged after a short fine-tune, smallest
first, by bisection over the candidates sorted by size (accuracy after fine-tuning
grows with size, nearly monotonically).
"""

import dataclasses

import numpy as np

from tf_vib._keras import keras
from tf_vib.stages import Distiller
from tf_vib.surgery import strip_masks
from tf_vib.training import BestWeights, accuracy

__all__ = ["Candidate", "Snapshots", "choose_smallest", "fine_tune"]


@dataclasses.dataclass
class Candidate:
    epoch: int
    threshold: float
    params: int
    masked_accuracy: float
    weights: list


def fine_tune(model, train, val, labels_val, *, epochs, batch_size, learning_rate, loss, verbose,
              teacher=None, distillation=None, callbacks=()):
    """Fine-tune a plain model, keep its best validation epoch; return (history, val accuracy).

    With a ``teacher``, the model learns through ``stages.Distiller`` (Hinton's loss with
    ``distillation`` = ``{"alpha", "beta", "temperature"}``); the model itself stays plain.
    """
    keep = BestWeights(lambda epoch, logs: (logs.get("val_accuracy", 0.0), -logs.get("val_loss", 0.0)),
                       model_to_save=model)
    keep.best_score = (accuracy(model, val[0], labels_val), -np.inf)
    keep.best_weights = [w.copy() for w in model.get_weights()]
    trained = model
    if teacher is not None:
        trained = Distiller(model, teacher, **(distillation or {}))
        trained.compile(optimizer=keras.optimizers.Adam(learning_rate), metrics=["accuracy"])
    else:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
    history = {}
    if epochs:
        history = trained.fit(
            train[0], train[1], validation_data=val, epochs=epochs, batch_size=batch_size,
            callbacks=[*callbacks, keep], verbose=verbose,
        ).history
    if teacher is not None:  # leave the model compiled for the user, with the task loss
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
    return history, accuracy(model, val[0], labels_val)


def choose_smallest(vib_model, candidates, floor, tune, *, log=None):
    """Bisection over candidates by size for the smallest whose fine-tuned accuracy >= floor.

    Args:
      vib_model: the VIB model; candidates' weights are loaded into it to strip them.
      candidates: ``Candidate`` list.
      floor: the accepted validation accuracy.
      tune: ``tune(plain_model) -> validation accuracy`` after a short fine-tune (in place).
      log: optional callable for one line per trial.

    Returns:
      ``(candidate, plain_model, accuracy, trials)`` where trials lists
      ``(params, masked accuracy, tuned accuracy)`` per tried candidate. When none reaches
      the floor, the best-scoring tried candidate is returned.
    """
    by_size = {}
    for candidate in sorted(candidates, key=lambda c: (c.params, -c.masked_accuracy, -c.epoch)):
        by_size.setdefault(candidate.params, candidate)
    ordered = list(by_size.values())
    tried = {}

    def trial(index):
        if index not in tried:
            candidate = ordered[index]
            vib_model.set_weights(candidate.weights)
            plain = strip_masks(vib_model, threshold=candidate.threshold, min_units=1)
            tuned = tune(plain)
            tried[index] = (plain, tuned)
            if log:
                log(f"candidate {index + 1}/{len(ordered)}: {candidate.params:,} parameters (epoch "
                    f"{candidate.epoch + 1}, threshold {candidate.threshold:g}), validation accuracy "
                    f"{candidate.masked_accuracy:.4f} masked, {tuned:.4f} fine-tuned")
        return tried[index][1]

    low, high = 0, len(ordered) - 1
    if trial(high) >= floor:
        while low < high:
            middle = (low + high) // 2
            if trial(middle) >= floor:
                high = middle
            else:
                low = middle + 1
        best = high
    else:
        best = max(tried, key=lambda i: (tried[i][1], -ordered[i].params))
    trials = [(ordered[i].params, ordered[i].masked_accuracy, tried[i][1]) for i in sorted(tried)]
    return ordered[best], tried[best][0], tried[best][1], trials


class Snapshots(keras.callbacks.Callback):
    """Every few epochs, the masked model's weights, size when stripped, and accuracy."""

    def __init__(self, vib_model, epochs, threshold, count=20):
        super().__init__()
        self.vib_model = vib_model
        self.epochs = epochs
        self.every = max(1, epochs // count)  # stripping to count parameters costs about an epoch
        self.threshold = threshold
        self.candidates = []

    def take(self, epoch, masked_accuracy):
        params = strip_masks(self.vib_model, threshold=self.threshold, min_units=1).count_params()
        weights = [w.copy() for w in self.vib_model.get_weights()]
        self.candidates.append(Candidate(epoch, self.threshold, params, masked_accuracy, weights))

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs:
            self.take(epoch, (logs or {}).get("val_accuracy", 0.0))
