"""Choosing the compressed model: the smallest candidate that fine-tunes back within the bound.

During VIB training compress() snapshots the masked model every few epochs
(``Snapshots``). Each snapshot, stripped at a keep threshold, is a candidate plain model.
The masked model's own validation score (hard gates, no fine-tuning) understates what the
plain model reaches after fine-tuning, so candidates are judged after a fine-tune, by
bisection over the candidates sorted by size (the score after fine-tuning improves with
size, nearly monotonically: ``choose_smallest``). A trial stops as soon as the candidate
reaches the bound (``StopAtScore``): that is all the bisection needs to know, and a small
candidate may need many epochs to get there while a failing one costs the whole budget.

Scores and the bound are a ``Scorer``'s (``_scorer``).
"""

import dataclasses

import numpy as np

from tf_vib._checks import check_int
from tf_vib._frames import kept_frames
from tf_vib._keras import keras
from tf_vib.compress._finetune import Distiller
from tf_vib.compress._scorer import ACCURACY
from tf_vib.compress._stream import fit_data
from tf_vib.compress._training import BestWeights, vib_layers
from tf_vib.surgery import strip_masks

__all__ = ["Candidate", "Snapshots", "StopAtScore", "choose_smallest", "fine_tune", "frame_count"]


def frame_count(vib_model, threshold):
    """How many frames ``vib_model``'s TimeMask keeps at ``threshold`` (at least one, as
    stripping keeps), or None without a TimeMask."""
    kept = kept_frames(vib_model, threshold=threshold, min_units=1)
    return None if kept is None else len(kept["kept"])


@dataclasses.dataclass
class Candidate:
    epoch: int
    threshold: float
    params: int
    masked_accuracy: float  # the masked model's validation score, in the run's metric
    weights: list
    frames: int | None = None  # frames kept by a TimeMask at ``threshold``; None without one

    @property
    def cost(self):
        """What the candidate costs per sample, for ordering: its parameters, times the frames
        it reads when a TimeMask prunes frames (each kept frame runs the per-frame layers and
        one recurrent step, so a candidate with fewer frames is smaller at equal parameters)."""
        return self.params * (self.frames or 1)

    @classmethod
    def from_record(cls, row, weights):
        """The candidate a checkpoint's ``row`` (`_resume.Checkpoints.candidate_saved`) records,
        with its ``weights`` read back."""
        return cls(row["epoch"], row["threshold"], row["params"], row["masked_accuracy"], weights, row.get("frames"))


def fine_tune(model, train, val, *, scorer=ACCURACY, epochs, batch_size, learning_rate, loss, verbose,
              teacher=None, distillation=None, callbacks=()):
    """Fine-tune a plain model, keep its best validation epoch; return (history, val score).

    The best epoch is the one with the best ``scorer`` value (ties: the lower validation
    loss), the model as it came in counting as one. With a ``teacher`` (classifiers only),
    the model learns through ``_finetune.Distiller`` (Hinton's loss with ``distillation`` =
    ``{"alpha", "beta", "temperature"}``); the model itself stays plain.
    """
    keep = BestWeights(lambda epoch, logs: (scorer.key(scorer.logged(logs)), -logs.get("val_loss", 0.0)),
                       model_to_save=model)
    keep.best_score = (scorer.key(scorer.score_on(model, val)), -np.inf)
    keep.best_weights = [w.copy() for w in model.get_weights()]
    trained = model
    if teacher is not None:
        trained = Distiller(model, teacher, **(distillation or {}))
        trained.compile(optimizer=keras.optimizers.Adam(learning_rate), metrics=[scorer.metric()])
    else:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=[scorer.metric()])
    history = {}
    if epochs:
        history = trained.fit(**fit_data(train, val, batch_size), epochs=epochs,
                              callbacks=[*callbacks, keep], verbose=verbose).history
    if teacher is not None:  # leave the model compiled for the user, with the task loss
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=[scorer.metric()])
    return history, scorer.score_on(model, val)


def choose_smallest(vib_model, candidates, scorer, tune, *, search_on_miss=False, patience=2, log=None):
    """The smallest candidate whose fine-tuned validation score meets ``scorer.bound``.

    Candidates are sorted by size, ``Candidate.cost`` (one per parameter count and frame
    count). The search starts from the smallest
    candidate that meets the bound before any fine-tuning (else from the largest), bisects
    below it, then scans the smaller candidates it has not tried, downwards, until
    ``patience`` of them in a row fail: on a small validation set one unlucky sample fails a
    candidate whose smaller neighbours pass, and bisection alone would never look below it.
    The bisection's own failures are skipped by the scan, not counted: snapshots of different
    epochs are not monotonic in size, and counting them once ended a JapaneseVowels search at
    an LSTM(19) of epoch 40 without trying the LSTM(12) and LSTM(13) snapshots below it.

    When neither the first candidate tried nor the largest meets the bound, the bound is out
    of reach. The search then ends with the better of the two, unless ``search_on_miss``:
    then the best score they reached becomes the target and the same search returns the
    smallest candidate that fine-tunes to it (compress()'s ``on_miss="best"``), or the
    smallest tried that meets the bound should one do after all (snapshots are not
    monotonic). Either way the caller sees the miss: ``scorer.meets(score)`` is False.

    Args:
      vib_model: the VIB model; candidates' weights are loaded into it to strip them.
      candidates: ``Candidate`` list.
      scorer: a ``Scorer`` with its ``bound`` set.
      tune: ``tune(plain_model, target) -> validation score`` after a fine-tune (in place),
        which may stop once it reaches ``target`` (the bound, or the fallback target).
      search_on_miss: bool, default False. Look for the smallest of the best-scoring
        candidates when the bound is out of reach (more trials), instead of stopping.
      patience: int >= 1, default 2. Consecutive failures (by size) that end the scan.
      log: optional callable for one line per trial.

    Returns:
      ``(candidate, plain_model, score, trials)`` where trials lists
      ``(params, masked score, tuned score)`` per tried candidate.
    """
    patience = check_int("patience", patience)
    by_size = {}
    for candidate in sorted(candidates, key=lambda c: (c.cost, c.params, -scorer.key(c.masked_accuracy), -c.epoch)):
        by_size.setdefault((candidate.params, candidate.frames), candidate)
    ordered = list(by_size.values())
    tried = {}

    target = scorer.bound

    def passes(index):
        if index not in tried:
            candidate = ordered[index]
            vib_model.set_weights(candidate.weights)
            plain = strip_masks(vib_model, threshold=candidate.threshold, min_units=1, input_frames="all")
            tuned = tune(plain, target)
            tried[index] = (plain, tuned)
            if log:
                frames = "" if candidate.frames is None else f", {candidate.frames} frames"
                log(f"candidate {index + 1}/{len(ordered)}: {candidate.params:,} parameters{frames} (epoch "
                    f"{candidate.epoch + 1}, threshold {candidate.threshold:g}), validation "
                    f"{scorer.describe(candidate.masked_accuracy)} masked, {scorer.describe(tuned)} fine-tuned")
        return scorer.meets(tried[index][1], target)

    def result(index):
        trials = [(ordered[i].params, ordered[i].masked_accuracy, tried[i][1]) for i in sorted(tried)]
        return ordered[index], tried[index][0], tried[index][1], trials

    known = [i for i, c in enumerate(ordered) if scorer.meets(c.masked_accuracy)]
    last = len(ordered) - 1
    start = known[0] if known else last
    best = start if passes(start) else last if start < last and passes(last) else None
    if best is None:  # the bound is out of reach
        best = max(tried, key=lambda i: (scorer.key(tried[i][1]), -ordered[i].params))
        if log:
            log(f"no candidate tried meets the bound, {scorer.condition()}; the best reached "
                f"{scorer.describe(tried[best][1])}" + ("; looking for the smallest that reaches it"
                                                        if search_on_miss else ""))
        if not search_on_miss:
            return result(best)
        target, low = tried[best][1], 0
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
    meeting = [i for i in tried if scorer.meets(tried[i][1])]
    if meeting and not scorer.meets(tried[best][1]):  # a model within the bound beats any other
        best = min(meeting)
    return result(best)


class StopAtScore(keras.callbacks.Callback):
    """Stops training at the end of the first epoch whose validation score meets ``target``.

    The score is ``scorer.logged(logs)`` (the model compiled with ``scorer.metric()``).
    Records the number of epochs run in ``epochs``.
    """

    def __init__(self, target, scorer=ACCURACY):
        super().__init__()
        self.target = float(target)
        self.scorer = scorer
        self.epochs = 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs = epoch + 1
        if self.scorer.meets(self.scorer.logged(logs), self.target):
            self.model.stop_training = True


class Snapshots(keras.callbacks.Callback):
    """Every few epochs, the masked model's weights, size when stripped, and validation score.

    Also at any epoch where the number of kept mask units has fallen to ``1 / drop`` of the
    last snapshot's or below: when thousands of masks move together (a wide layer, where
    the KL term outweighs each unit's share of the data term), the structure can go from
    full to nearly empty between two scheduled snapshots, and those epochs hold the models
    worth trying.

    Stripping a model to count its parameters costs about an epoch of training on small
    data, so the count is cached by the set of kept units of every mask: a snapshot whose
    structure was seen before costs only a copy of the weights.
    """

    def __init__(self, vib_model, epochs, threshold, count=20, drop=4.0, scorer=ACCURACY):
        super().__init__()
        self.scorer = scorer
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

    def take(self, epoch, masked_score):
        kept = [m.kept(self.threshold) for m in self._masks]
        structure = b"".join(np.packbits(k).tobytes() for k in kept)
        if structure not in self._params:
            self._params[structure] = (strip_masks(self.vib_model, threshold=self.threshold, min_units=1).count_params(),
                                       frame_count(self.vib_model, self.threshold))
        params, frames = self._params[structure]
        weights = [w.copy() for w in self.vib_model.get_weights()]
        self.candidates.append(Candidate(epoch, self.threshold, params, masked_score, weights, frames))
        self._kept = sum(int(k.sum()) for k in kept)

    def on_train_begin(self, logs=None):
        if self._kept is None:
            self._kept = self.kept_units()

    def on_epoch_end(self, epoch, logs=None):
        due = (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs
        if due or (self._kept and self.kept_units() * self.drop <= self._kept):
            self.take(epoch, self.scorer.logged(logs))
