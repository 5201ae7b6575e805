"""Choosing the compressed model: the smallest candidate that fine-tunes back within the bound.

During VIB training compress() snapshots the masked model every few epochs. Each
snapshot, stripped at a keep threshold, is a candidate plain model. The masked model's
own validation score (hard gates, no fine-tuning) understates what the plain model
reaches after fine-tuning, so candidates are judged after a fine-tune, by bisection
over the candidates sorted by size (the score after fine-tuning improves with size, nearly
monotonically). A trial stops as soon as the candidate reaches the bound
(``StopAtScore``): that is all the bisection needs to know, and a small candidate may
need many epochs to get there while a failing one costs the whole budget.

Every comparison goes through a ``Scorer``: accuracy for classifiers, the loss or any
Keras metric otherwise (lower is better for a loss or an error).
"""

import dataclasses
from collections.abc import Callable

import numpy as np

from tf_vib._keras import keras, tf
from tf_vib.compress._data import labels_of
from tf_vib.compress._finetune import Distiller
from tf_vib.compress._training import BestWeights, accuracy, loss_kind, vib_layers
from tf_vib.surgery import strip_masks

__all__ = ["ACCURACY", "BoundNotMetWarning", "Candidate", "ON_MISS", "Scorer", "Snapshots", "StopAtScore",
           "check_on_miss", "choose_smallest", "fine_tune", "is_classifier", "make_scorer"]

#: What compress() returns when no model meets the bound: a copy of the user's model, or
#: the best candidate, labelled as missing the bound.
ON_MISS = ("original", "best")

#: Metric names (parts of) for which a higher value is better; any other metric is taken as
#: an error or a loss, lower being better.
HIGHER_IS_BETTER = ("accuracy", "auc", "precision", "recall", "cosine_similarity", "iou")


class BoundNotMetWarning(UserWarning):
    """compress() found no model within the bound, or refused a stage whose model missed it."""


def class_labels(model, y):
    """Integer class labels of ``y`` (indices, one-hot rows; a tuple for several outputs)."""
    labels = [labels_of(target, tuple(tensor.shape), "labels")[1]
              for target, tensor in zip(tf.nest.flatten(y), model.outputs, strict=True)]
    return labels[0] if len(labels) == 1 else tuple(labels)


@dataclasses.dataclass(frozen=True)
class Scorer:
    """A validation metric: how compress() scores, compares and bounds every model.

    Attributes:
      name: the metric's name, as the report shows it.
      higher_is_better: True for accuracy-like metrics, False for losses and errors.
      make_metric: a callable returning a fresh Keras metric; None for accuracy (the argmax
        of the outputs against class labels, or one-hot rows).
      bound: the accepted value (None until ``bounded``): a floor when higher is better,
        a ceiling otherwise.
    """

    name: str
    higher_is_better: bool
    make_metric: Callable | None = None
    bound: float | None = None

    @property
    def is_accuracy(self):
        return self.make_metric is None

    @property
    def log_key(self):
        """The key of the validation score in Keras ``fit`` logs (compiled with ``metric()``)."""
        return "val_accuracy" if self.is_accuracy else "val_score"

    @property
    def worst(self):
        return -np.inf if self.higher_is_better else np.inf

    def metric(self):
        """The metric to compile a model with, so that ``fit`` logs ``log_key``."""
        return "accuracy" if self.is_accuracy else self.make_metric()

    def score(self, model, x, y):
        """The metric of ``model`` on ``(x, y)``, over the whole set."""
        if self.is_accuracy:
            return accuracy(model, x, class_labels(model, y))
        metric = self.make_metric()
        metric.update_state(y, model.predict(x, batch_size=256, verbose=0))
        return float(metric.result())

    def key(self, value):
        """``value`` as a number where larger is better, for sorting and comparing."""
        return float(value) if self.higher_is_better else -float(value)

    def logged(self, logs):
        """The validation score in Keras logs, ``worst`` when absent. A model with several
        outputs logs one score per output (``val_<output>_accuracy``): their mean, as
        `training.accuracy` averages its outputs."""
        logs = logs or {}
        if self.log_key in logs:
            return logs[self.log_key]
        suffix = "_" + self.log_key[len("val_"):]
        per_output = [v for k, v in logs.items() if k.startswith("val_") and k.endswith(suffix)]
        return float(np.mean(per_output)) if per_output else self.worst

    def meets(self, value, target=None):
        """Whether ``value`` reaches ``target`` (default: the bound). The slack (1e-6 relative)
        absorbs float32 summation order: Keras' per-batch metric against one update."""
        target = self.bound if target is None else target
        return self.key(value) >= self.key(target) - 1e-9 - 1e-6 * abs(float(target))

    def bounded(self, baseline, drop):
        """This scorer with the bound ``drop`` (absolute, in the metric's units) from ``baseline``."""
        return dataclasses.replace(self, bound=float(baseline - drop if self.higher_is_better else baseline + drop))

    def condition(self):
        """The bound as a condition, e.g. "accuracy >= 0.9815"."""
        return f"{self.name} {'>=' if self.higher_is_better else '<='} {self.bound:{self._format}}"

    def describe(self, value):
        return f"{self.name} {value:{self._format}}"

    @property
    def _format(self):
        return ".4f" if self.is_accuracy else ".4g"


#: Accuracy: the argmax of the outputs against class labels.
ACCURACY = Scorer("accuracy", True)


def is_classifier(model, loss):
    """True when every output of ``model`` is trained with a cross-entropy (categorical,
    sparse or binary: `training.loss_kind`): accuracy applies to it (Hinton's distillation
    to the softmax ones, see `_compress_args.why_not_distilled`)."""
    losses = (list(loss) if isinstance(loss, (list, tuple)) else
              [loss.get(name) for name in model.output_names] if isinstance(loss, dict) else [loss])
    return all(loss_kind(one) is not None for one in losses)


def make_scorer(metric, *, loss, classifier):
    """The ``Scorer`` of compress()'s ``metric`` argument.

    Args:
      metric: None (accuracy for a classifier, else the loss), "accuracy", "loss", a Keras
        metric name (e.g. "mae") or object, or a ``Scorer``.
      loss: the resolved training loss (``training.resolve_loss``).
      classifier: ``is_classifier(model, loss)``.
    """
    if isinstance(metric, Scorer):
        return dataclasses.replace(metric, bound=None)
    if metric is None:
        metric = "accuracy" if classifier else "loss"
    if metric == "accuracy":
        if not classifier:
            raise ValueError("`metric` 'accuracy' needs a classifier (several outputs trained with a "
                             "categorical cross-entropy); received it for a model trained on "
                             f"{_name(loss)!r}: use metric='loss' or a Keras metric such as 'mae'")
        return ACCURACY
    if metric == "loss":
        return Scorer(_name(loss), False, _mean_of(_per_sample(loss)))
    try:
        found = keras.metrics.get(metric)
    except (ValueError, TypeError):
        found = None
    if isinstance(found, keras.metrics.Metric):
        config = found.get_config()
        return Scorer(found.name, _higher(found.name), lambda: type(found).from_config({**config, "name": "score"}))
    if not callable(found):
        raise ValueError("`metric` must be None, 'accuracy', 'loss', a Keras metric name or object, or a "
                         f"tf_vib.Scorer; received {metric!r}")
    name = metric if isinstance(metric, str) else _name(found)
    return Scorer(name, _higher(name), _mean_of(found))


def _name(function):
    return getattr(function, "name", None) or getattr(function, "__name__", type(function).__name__)


def _higher(name):
    return any(part in name.lower() for part in HIGHER_IS_BETTER)


def _mean_of(function):
    return lambda: keras.metrics.MeanMetricWrapper(function, name="score")


def _per_sample(loss):
    """``loss`` without its batch reduction, so that its mean over batches is the whole set's."""
    if isinstance(loss, keras.losses.Loss):
        try:
            return type(loss).from_config({**loss.get_config(), "reduction": keras.losses.Reduction.NONE})
        except (TypeError, ValueError):  # a custom Loss without a usable config: batch means
            return loss
    return loss


def check_on_miss(value):
    if value not in ON_MISS:
        raise ValueError(f"`on_miss` must be one of {', '.join(map(repr, ON_MISS))}; received {value!r}")
    return value


@dataclasses.dataclass
class Candidate:
    epoch: int
    threshold: float
    params: int
    masked_accuracy: float  # the masked model's validation score, in the run's metric
    weights: list


def fine_tune(model, train, val, *, scorer=ACCURACY, epochs, batch_size, learning_rate, loss, verbose,
              teacher=None, distillation=None, callbacks=()):
    """Fine-tune a plain model, keep its best validation epoch; return (history, val score).

    The best epoch is the one with the best ``scorer`` value (ties: the lower validation
    loss), the model as it came in counting as one. With a ``teacher`` (classifiers only),
    the model learns through ``stages.Distiller`` (Hinton's loss with ``distillation`` =
    ``{"alpha", "beta", "temperature"}``); the model itself stays plain.
    """
    keep = BestWeights(lambda epoch, logs: (scorer.key(scorer.logged(logs)), -logs.get("val_loss", 0.0)),
                       model_to_save=model)
    keep.best_score = (scorer.key(scorer.score(model, *val)), -np.inf)
    keep.best_weights = [w.copy() for w in model.get_weights()]
    trained = model
    if teacher is not None:
        trained = Distiller(model, teacher, **(distillation or {}))
        trained.compile(optimizer=keras.optimizers.Adam(learning_rate), metrics=[scorer.metric()])
    else:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=[scorer.metric()])
    history = {}
    if epochs:
        history = trained.fit(
            train[0], train[1], validation_data=val, epochs=epochs, batch_size=batch_size,
            callbacks=[*callbacks, keep], verbose=verbose,
        ).history
    if teacher is not None:  # leave the model compiled for the user, with the task loss
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=[scorer.metric()])
    return history, scorer.score(model, *val)


def choose_smallest(vib_model, candidates, scorer, tune, *, search_on_miss=False, patience=2, log=None):
    """The smallest candidate whose fine-tuned validation score meets ``scorer.bound``.

    Candidates are sorted by size (one per size). The search starts from the smallest
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
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ValueError(f"`patience` must be an integer >= 1; received {patience!r}")
    by_size = {}
    for candidate in sorted(candidates, key=lambda c: (c.params, -scorer.key(c.masked_accuracy), -c.epoch)):
        by_size.setdefault(candidate.params, candidate)
    ordered = list(by_size.values())
    tried = {}

    target = scorer.bound

    def passes(index):
        if index not in tried:
            candidate = ordered[index]
            vib_model.set_weights(candidate.weights)
            plain = strip_masks(vib_model, threshold=candidate.threshold, min_units=1)
            tuned = tune(plain, target)
            tried[index] = (plain, tuned)
            if log:
                log(f"candidate {index + 1}/{len(ordered)}: {candidate.params:,} parameters (epoch "
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
            self._params[structure] = strip_masks(self.vib_model, threshold=self.threshold,
                                                  min_units=1).count_params()
        weights = [w.copy() for w in self.vib_model.get_weights()]
        self.candidates.append(Candidate(epoch, self.threshold, self._params[structure], masked_score,
                                         weights))
        self._kept = sum(int(k.sum()) for k in kept)

    def on_train_begin(self, logs=None):
        if self._kept is None:
            self._kept = self.kept_units()

    def on_epoch_end(self, epoch, logs=None):
        due = (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs
        if due or (self._kept and self.kept_units() * self.drop <= self._kept):
            self.take(epoch, self.scorer.logged(logs))
