"""The metric compress() judges every model by, and the bound it holds them to.

Every comparison goes through a ``Scorer``: accuracy for classifiers, the loss or any
Keras metric otherwise (lower is better for a loss or an error). ``make_scorer`` reads
compress()'s ``metric`` argument; ``Scorer.bounded`` sets the bound from the baseline and
the accepted drop; a model that misses it is handled by ``on_miss`` (``ON_MISS``) and
flagged with ``BoundNotMetWarning``.
"""

import dataclasses
import weakref
from collections.abc import Callable

import numpy as np

from tf_vib._checks import check_choice
from tf_vib._keras import keras, tf
from tf_vib.compress._data import labels_of
from tf_vib.compress._stream import Stream
from tf_vib.compress._training import accuracy, binary_threshold, loss_kind, predicted_classes

__all__ = ["ACCURACY", "BoundNotMetWarning", "ON_MISS", "Scorer", "check_on_miss", "is_classifier", "make_scorer"]

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


_PREDICTORS = weakref.WeakKeyDictionary()  # model -> {input signature: its inference function}


def batch_predictor(model, dataset):
    """``model``'s inference (``training=False``) on the batches of ``dataset``, as one
    ``tf.function`` per model and input spec, traced once for every batch size (the
    signature leaves the batch axis open) and kept across compiles.

    Keras's ``predict_on_batch`` traced its predict function again for every model it was
    called on after each ``compile`` (a candidate's fine-tune compiles it) and for every new
    batch shape (the last, smaller batch of a stream): two traces or more per evaluation of a
    fresh model, and TensorFlow's "triggered tf.function retracing" warnings during streamed
    evaluation. Under a strategy the function reads the mirrored variables in cross-replica
    context: each worker evaluates the whole batch, exactly, on its default device.
    """
    x_spec = dataset.element_spec[0]
    signature = tf.nest.map_structure(lambda s: tf.TensorSpec([None, *s.shape[1:]], s.dtype), x_spec)
    key = repr(signature)
    functions = _PREDICTORS.setdefault(model, {})
    if key not in functions:
        ref = weakref.ref(model)  # the cache must not keep the model alive
        functions[key] = tf.function(lambda x: ref()(x, training=False), input_signature=[signature])
    return functions[key]


def streamed_predictions(model, dataset):
    """``(y, flattened predictions)`` of each batch of ``dataset``, as NumPy arrays."""
    predict = batch_predictor(model, dataset)
    for x, y in dataset:
        yield tf.nest.map_structure(np.asarray, y), [np.asarray(p) for p in tf.nest.flatten(predict(x))]


def streamed_accuracy(model, dataset):
    """`_training.accuracy` over a dataset of (x, y) batches: the correct predictions of
    each output summed batch by batch, then the mean over outputs."""
    correct = total = 0
    for y, predictions in streamed_predictions(model, dataset):
        labels = tf.nest.flatten(class_labels(model, y))
        guesses = predicted_classes(model, predictions)
        correct = correct + np.array([np.sum(g == t) for g, t in zip(guesses, labels, strict=True)])
        total = total + np.array([t.size for t in labels])
    return float(np.mean(correct / total))


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
      logit_threshold: for the accuracy of a one-unit logit output: 0, the threshold
        training logs too (Keras's "accuracy" of one unit thresholds at 0.5, right for a
        sigmoid only); None otherwise.
    """

    name: str
    higher_is_better: bool
    make_metric: Callable | None = None
    bound: float | None = None
    logit_threshold: float | None = None

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
        if self.is_accuracy and self.logit_threshold is not None:
            return keras.metrics.BinaryAccuracy(name="accuracy", threshold=self.logit_threshold)
        return "accuracy" if self.is_accuracy else self.make_metric()

    def score(self, model, x, y):
        """The metric of ``model`` on ``(x, y)``, over the whole set."""
        if self.is_accuracy:
            return accuracy(model, x, class_labels(model, y))
        metric = self.make_metric()
        metric.update_state(y, model.predict(x, batch_size=256, verbose=0))
        return float(metric.result())

    def score_on(self, model, data):
        """The metric of ``model`` on ``data``: (x, y) arrays (`score`), or a `_stream.Stream`
        read batch by batch (`batch_predictor`; correct predictions, or the metric's
        state, summed over the batches), never held whole."""
        if not isinstance(data, Stream):
            return self.score(model, *data)
        if self.is_accuracy:
            return streamed_accuracy(model, data.dataset)
        metric = self.make_metric()
        for y, predictions in streamed_predictions(model, data.dataset):
            metric.update_state(y, predictions[0] if len(predictions) == 1 else predictions)
        return float(metric.result())

    def key(self, value):
        """``value`` as a number where larger is better, for sorting and comparing."""
        return float(value) if self.higher_is_better else -float(value)

    def logged(self, logs):
        """The validation score in Keras logs, ``worst`` when absent. A model with several
        outputs logs one score per output (``val_<output>_accuracy``): their mean, as
        `_training.accuracy` averages its outputs."""
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
    to the softmax ones, see `_prepare.why_not_distilled`)."""
    losses = (list(loss) if isinstance(loss, (list, tuple)) else
              [loss.get(name) for name in model.output_names] if isinstance(loss, dict) else [loss])
    return all(loss_kind(one) is not None for one in losses)


def make_scorer(metric, *, loss, classifier, model=None):
    """The ``Scorer`` of compress()'s ``metric`` argument.

    Args:
      metric: None (accuracy for a classifier, else the loss), "accuracy", "loss", a Keras
        metric name (e.g. "mae") or object, or a ``Scorer``.
      loss: the resolved training loss (``training.resolve_loss``).
      classifier: ``is_classifier(model, loss)``.
      model: the model scored, if known: a single one-unit logit output is logged at
        threshold 0 in training, as it is scored.
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
        one_logit = (model is not None and len(model.outputs) == 1 and model.outputs[0].shape[-1] == 1
                     and binary_threshold(model, 0) == 0.0)
        return dataclasses.replace(ACCURACY, logit_threshold=0.0) if one_logit else ACCURACY
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
    return check_choice("on_miss", value, ON_MISS)

