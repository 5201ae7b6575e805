"""Choosing the compressed model: the smallest candidate that fine-tunes back to accuracy.

During VIB training compress() snapshots the masked model every few epochs. Each
snapshot, stripped at a keep threshold, is a candidate plain model. The masked model's
own validation accuracy (hard gates, no fine-tuning) understates what the plain model
reaches after fine-tuning, so candidates are judged after a fine-tune, by bisection
over the candidates sorted by size (accuracy after fine-tuning grows with size, nearly
monotonically). A trial stops as soon as the candidate reaches the accepted accuracy
(``StopAtAccuracy``): that is all the bisection needs to know, and a small candidate may
need many epochs to get there while a failing one costs the whole budget.
"""

import dataclasses

import numpy as np

from tf_vib._keras import keras
from tf_vib.stages import Distiller
from tf_vib.surgery import strip_masks
from tf_vib.training import BestWeights, accuracy, vib_layers

__all__ = ["Candidate", "Snapshots", "StopAtAccuracy", "choose_smallest", "fine_tune"]


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


def choose_smallest(vib_model, candidates, floor, tune, *, patience=2, log=None):
    """The smallest candidate whose fine-tuned validation accuracy reaches ``floor``.

    Candidates are sorted by size (one per size). The search starts from the smallest
    candidate that reaches the floor before any fine-tuning (else from the largest), bisects
    below it, then scans the smaller candidates it has not tried, downwards, until
    ``patience`` of them in a row fail: on a small validation set one unlucky sample fails a
    candidate whose smaller neighbours pass, and bisection alone would never look below it.
    The bisection's own failures are skipped by the scan, not counted: snapshots of different
    epochs are not monotonic in size, and counting them once ended a JapaneseVowels search at
    an LSTM(19) of epoch 40 without trying the LSTM(12) and LSTM(13) snapshots below it.

    Args:
      vib_model: the VIB model; candidates' weights are loaded into it to strip them.
      candidates: ``Candidate`` list.
      floor: the accepted validation accuracy.
      tune: ``tune(plain_model, target) -> validation accuracy`` after a fine-tune (in
        place), which may stop once it reaches ``target`` (the floor, or the fallback target).
      patience: int >= 1, default 2. Consecutive failures (by size) that end the scan.
      log: optional callable for one line per trial.

    Returns:
      ``(candidate, plain_model, accuracy, trials)`` where trials lists
      ``(params, masked accuracy, tuned accuracy)`` per tried candidate. When neither the
      first candidate tried nor the largest reaches the floor, the floor is out of reach:
      the best accuracy they reached becomes the target, and the same search returns the
      smallest candidate that fine-tunes to it (on a validation set of 54 samples, one
      sample is 1.9 points: the alternative was to keep the largest candidate tried).
    """
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ValueError(f"`patience` must be an integer >= 1; received {patience!r}")
    by_size = {}
    for candidate in sorted(candidates, key=lambda c: (c.params, -c.masked_accuracy, -c.epoch)):
        by_size.setdefault(candidate.params, candidate)
    ordered = list(by_size.values())
    tried = {}

    target = floor

    def passes(index):
        if index not in tried:
            candidate = ordered[index]
            vib_model.set_weights(candidate.weights)
            plain = strip_masks(vib_model, threshold=candidate.threshold, min_units=1)
            tuned = tune(plain, target)
            tried[index] = (plain, tuned)
            if log:
                log(f"candidate {index + 1}/{len(ordered)}: {candidate.params:,} parameters (epoch "
                    f"{candidate.epoch + 1}, threshold {candidate.threshold:g}), validation accuracy "
                    f"{candidate.masked_accuracy:.4f} masked, {tuned:.4f} fine-tuned")
        return tried[index][1] >= target

    known = [i for i, c in enumerate(ordered) if c.masked_accuracy >= floor]
    last = len(ordered) - 1
    start = known[0] if known else last
    best = start if passes(start) else last if start < last and passes(last) else None
    if best is None:  # the floor is out of reach: aim for the best accuracy reached
        best = max(tried, key=lambda i: (tried[i][1], -ordered[i].params))
        target, low = tried[best][1], 0
        if log:
            log(f"no candidate tried reaches the accepted accuracy {floor:.4f}; looking for the "
                f"smallest that reaches the best one seen, {target:.4f}")
    else:
        low = start + 1 if best != start else 0
    while low < best:
        middle = (low + best) // 2
        if passes(middle):
            best = middle
        else:
            low = middle + 1
    failures = 0
    for index in range(best - 1, -1, -1):
        if failures >= patience:
            break
        if index in tried:  # a failure of the bisection: known, and no reason to stop here
            continue
        if passes(index):
            best, failures = index, 0
        else:
            failures += 1
    trials = [(ordered[i].params, ordered[i].masked_accuracy, tried[i][1]) for i in sorted(tried)]
    return ordered[best], tried[best][0], tried[best][1], trials


class StopAtAccuracy(keras.callbacks.Callback):
    """Stops training at the end of the first epoch whose ``val_accuracy`` reaches ``floor``.

    Records the number of epochs run in ``epochs``.
    """

    def __init__(self, floor):
        super().__init__()
        self.floor = float(floor)
        self.epochs = 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs = epoch + 1
        if (logs or {}).get("val_accuracy", -1.0) >= self.floor:
            self.model.stop_training = True


class Snapshots(keras.callbacks.Callback):
    """Every few epochs, the masked model's weights, size when stripped, and accuracy.

    Also at any epoch where the number of kept mask units has fallen to ``1 / drop`` of the
    last snapshot's or below: when thousands of masks move together (a wide layer, where
    the KL term outweighs each unit's share of the data term), the structure can go from
    full to nearly empty between two scheduled snapshots, and those epochs hold the models
    worth trying.

    Stripping a model to count its parameters costs about an epoch of training on small
    data, so the count is cached by the set of kept units of every mask: a snapshot whose
    structure was seen before costs only a copy of the weights.
    """

    def __init__(self, vib_model, epochs, threshold, count=20, drop=4.0):
        super().__init__()
        self.vib_model = vib_model
        self.epochs = epochs
        self.every = max(1, epochs // count)
        self.threshold = threshold
        self.drop = float(drop)
        self.candidates = []
        self._masks = [m for layer in vib_layers(vib_model) for m in layer.vib_masks.values()]
        self._params = {}
        self._kept = None  # kept mask units at the last snapshot

    def kept_units(self):
        """Mask units kept at ``threshold``, over all masks."""
        return sum(int(m.kept(self.threshold).sum()) for m in self._masks)

    def take(self, epoch, masked_accuracy):
        kept = [m.kept(self.threshold) for m in self._masks]
        structure = b"".join(np.packbits(k).tobytes() for k in kept)
        if structure not in self._params:
            self._params[structure] = strip_masks(self.vib_model, threshold=self.threshold,
                                                  min_units=1).count_params()
        weights = [w.copy() for w in self.vib_model.get_weights()]
        self.candidates.append(Candidate(epoch, self.threshold, self._params[structure], masked_accuracy,
                                         weights))
        self._kept = sum(int(k.sum()) for k in kept)

    def on_train_begin(self, logs=None):
        if self._kept is None:
            self._kept = self.kept_units()

    def on_epoch_end(self, epoch, logs=None):
        due = (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs
        if due or (self._kept and self.kept_units() * self.drop <= self._kept):
            self.take(epoch, (logs or {}).get("val_accuracy", 0.0))
