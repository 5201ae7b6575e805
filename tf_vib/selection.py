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
from tf_vib.surgery import strip_masks
from tf_vib.training import BestWeights, accuracy

__all__ = ["Candidate", "choose_smallest", "fine_tune"]


@dataclasses.dataclass
class Candidate:
    epoch: int
    threshold: float
    params: int
    masked_accuracy: float
    weights: list


def fine_tune(model, train, val, labels_val, *, epochs, batch_size, learning_rate, loss, verbose):
    """Fine-tune a plain model, keep its best validation epoch; return (history, val accuracy)."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
    start = accuracy(model, val[0], labels_val)
    keep = BestWeights(lambda epoch, logs: (logs.get("val_accuracy", 0.0), -logs.get("val_loss", 0.0)))
    keep.best_score, keep.best_weights = (start, -np.inf), [w.copy() for w in model.get_weights()]
    history = {}
    if epochs:
        history = model.fit(
            train[0], train[1], validation_data=val, epochs=epochs, batch_size=batch_size,
            callbacks=[keep], verbose=verbose,
        ).history
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
