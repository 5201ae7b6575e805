"""compress(): from a trained Keras model to a small plain one, with a report."""

import dataclasses
import time
import warnings

import numpy as np

from tf_vib._compress_args import (
    check_accuracy_drop,
    check_float,
    check_int,
    optional,
    prepare_data,
    rank_or_energy,
    why_not_distilled,
)
from tf_vib._data import num_samples
from tf_vib._graph import graph_nodes
from tf_vib._keras import keras, require_tf_keras_model
from tf_vib.compression_report import CompressionReport, StageResult
from tf_vib.layers.vib_lstm import VIBLSTMCell
from tf_vib.lowrank import low_rank as factorise
from tf_vib.registry import FUSED_LSTM_UNIT_MULTIPLE
from tf_vib.regularizers import ISSPenalty, zero_small_groups
from tf_vib.schedules import VIBSchedule, VIBScheduleCallback
from tf_vib.selection import (
    BoundNotMetWarning,
    Candidate,
    Snapshots,
    StopAtScore,
    check_on_miss,
    choose_smallest,
    fine_tune,
    is_classifier,
    make_scorer,
)
from tf_vib.stages import _copy, cluster, magnitude_prune
from tf_vib.storage import clustered_storage, gzip_size, nonzero_params
from tf_vib.surgery import alive_units, strip_masks, unit_gates
from tf_vib.training import TwoRateTrainer, resolve_loss
from tf_vib.wrap import add_vib_masks, mask_plan

__all__ = ["compress", "CompressionResult", "DEFAULT_MAX_DROP", "DEFAULT_THRESHOLDS", "STATE_GATES",
           "KL_SAMPLES_CAP", "KL_REFERENCE_WIDTH", "UNIT_MULTIPLE", "default_kl_factor", "masked_width",
           "trim_plan"]

#: The gates compress() masks by default: the LSTM output gate and the GRU candidate, i.e. a
#: mask on the hidden state. Both fold exactly into the plain layer (no gap between the
#: trained masked model and the stripped one) and train faster than masks on every gate.
STATE_GATES = {"lstm": "o", "gru": "h", "simple_rnn": "h"}

#: The default tolerance: ``max_accuracy_drop`` (0.5 point), and for any other metric the
#: same fraction of the baseline's value (0.5% of its validation loss, say).
DEFAULT_MAX_DROP = 0.005

#: log_alpha thresholds tried when choosing the model: 0 prunes the most.
DEFAULT_THRESHOLDS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)

#: compress()'s default ``unit_multiple``: TFLite's fused LSTM kernel runs a layer whose units
#: are a multiple of 4 faster than one a unit or more above it (docs/deployment.md: on x86,
#: LSTM(13) takes 1.25-1.28x the time of LSTM(8) where LSTM(12) takes 1.13-1.15x), so a
#: chosen LSTM of 13 units is worth trimming to 12 when accuracy allows. What is not trimmed,
#: the converter pads to the same multiple in the float modes (``AUTO_UNIT_MULTIPLE``).
UNIT_MULTIPLE = FUSED_LSTM_UNIT_MULTIPLE

#: The training-set size above which the default KL weight stops shrinking.
KL_SAMPLES_CAP = 256

#: The layer width above which the default KL weight shrinks in proportion.
KL_REFERENCE_WIDTH = 128


def default_kl_factor(n_train, width=KL_REFERENCE_WIDTH):
    """The default KL weight: ``1 / min(n_train, 256) * min(1, 128 / width)``.

    ``1 / n_train`` is the per-sample ELBO weighting. Over an epoch it pushes the masks by
    the same total whatever the data size, while the data term's push grows with
    ``n_train``: on sklearn's digits (1,078 training rows) the masks stopped at 8-10x
    fewer LSTM parameters in 100 epochs, with the model still above the baseline's
    accuracy. Capping the sample count at 256 keeps the pruning going on larger sets
    (digits: 24-34x at no accuracy loss) and leaves small sets (JapaneseVowels: 216 rows)
    as they were.

    ``width`` is the widest masked layer (units, or input features of a recurrent layer).
    The KL gradient on each mask does not depend on the width, while each unit's share of
    the data term shrinks as ``1 / width``, and Adam moves every mask whose gradient the KL
    dominates at the same pace: in the paper-sized ``LSTM(2048)`` on 2048 features all
    masks crossed the threshold within one epoch and left a 26-parameter model. Scaling
    the weight by ``128 / width`` keeps a unit of a wide layer in the balance a unit of a
    128-unit layer has (paper-sized benchmark: 1,055-1,143x fewer LSTM parameters, test accuracy
    above the baseline's).
    """
    return 1.0 / min(int(n_train), KL_SAMPLES_CAP) * min(1.0, KL_REFERENCE_WIDTH / max(int(width), 1))


def masked_width(model):
    """The widest vector `add_vib_masks` puts masks on: the units of each masked recurrent
    layer, the features in front of each FeatureMask."""
    plan = mask_plan(model)
    widths = [1]
    for node in graph_nodes(model):
        layer = node.layer
        if layer.name in plan.units:
            inner = layer.forward_layer if isinstance(layer, keras.layers.Bidirectional) else layer
            widths.append(int(inner.cell.units))
        if id(node) in plan.feature_masks:
            widths.append(int(node.keras_inputs[0].shape[-1]))
    return max(widths)


@dataclasses.dataclass
class CompressionResult:
    """What ``compress`` returns.

    Attributes:
      model: the compressed plain tf_keras model (no VIB layer inside), compiled; a copy of
        the original when no compressed model met the bound (``report.misses`` says why).
      report: a ``CompressionReport`` (per stage and per layer; ``str()`` is a table,
        ``to_json()``, ``plot(path)``).
      histories: ``{stage: keras History.history dict}``.
      vib_model: the trained model with its VIB layers, before stripping.
      threshold: the log_alpha threshold chosen on validation data.
    """

    model: object
    report: CompressionReport
    histories: dict
    vib_model: object = None
    threshold: float | None = None


def compress(
    model,
    train_data,
    *,
    validation_data=None,
    test_data=None,
    loss=None,
    vib=True,
    epochs=100,
    finetune_epochs=60,
    batch_size=32,
    learning_rate=1e-3,
    mask_learning_rate=1e-2,
    finetune_learning_rate=1e-3,
    kl_factor=None,
    input_kl_mult=1.0,
    hidden_kl_mult=3.0,
    dense_kl_mult=1.0,
    masked_gates=None,
    warmup_epochs=5,
    metric=None,
    max_accuracy_drop=None,
    max_metric_drop=None,
    on_miss="original",
    thresholds=DEFAULT_THRESHOLDS,
    unit_multiple=UNIT_MULTIPLE,
    iss=None,
    iss_threshold=None,
    low_rank=None,
    magnitude_sparsity=None,
    clusters=None,
    distill=True,
    distill_temperature=2.0,
    distill_alpha=0.5,
    validation_fraction=0.2,
    seed=0,
    verbose=1,
):
    """Compress a trained tf_keras LSTM/GRU model; return a small plain model and a report.

    The VIB stage copies the model with VIB layers in place of its recurrent layers (a
    FeatureMask on their inputs, gate masks in the cells) and after its hidden Dense layers,
    warm-started from the trained weights, and trains it on ``loss + kl_factor *
    sum(kl_mult * KL)`` (Dai et al. 2018) with a higher learning rate for the masks, driven by
    a ``VIBSchedule`` (KL warm-up). Snapshots of it, stripped at the keep thresholds, are the
    candidates; the smallest that fine-tunes back within the bound is kept
    (``tf_vib.selection``), then fine-tuned (with knowledge distillation from the original
    if ``distill``, for a classifier). Further stages, each usable without VIB
    (``vib=False``): ``iss`` (group lasso during the same training, zeroed units removed),
    ``low_rank``, ``magnitude_sparsity`` (tfmot), ``clusters`` (tfmot).

    The bound: the baseline's validation ``metric`` minus ``max_metric_drop`` (plus, for a
    loss or an error: lower is better). A model that misses it on validation data never
    comes back by default. Every stage's model is checked: a stage whose model misses the
    bound is refused and the next stage starts from the previous model; when no VIB
    candidate meets it, that is a copy of the original model (clone and weights, compiled
    like any result). A ``BoundNotMetWarning`` and the report (``bound``, ``misses``,
    ``str(report)``) then say what the bound was and what the best model reached.
    ``on_miss="best"`` keeps such models instead, labelled: ``report.bound_met`` is False.

    Args:
      model: a trained tf_keras Sequential or functional model, not modified: a classifier
        (every output trained with a cross-entropy: softmax, logits or a sigmoid unit) or
        any model with a Keras loss (a forecaster on MSE, say).
      train_data: ``(x, y)`` arrays or a ``tf.data.Dataset`` of (x, y). ``x``: one array, or
        for a model with several inputs a list in ``model.inputs`` order or a dict keyed by
        input name (integer token ids keep their dtype); ``y`` likewise per output. For a
        classifier: class indices or one-hot rows, per step (``(n, T)`` or ``(n, T, C)``) for
        a per-step output, 0/1 for a one-unit sigmoid output; labels are converted to what
        the loss takes when that is unambiguous (one-hot rows to indices for a sparse loss,
        indices to one-hot rows for a categorical one). Otherwise: targets of the output's
        shape. Sample weights are refused, and so are sequences of different lengths (pad
        them with ``tf_vib.datasets.pad_sequences``).
      validation_data: same forms; every choice is made on it. When None,
        ``validation_fraction`` of ``train_data`` is held out (stratified by class for a
        classifier).
      test_data: optional, only reported, never used for a choice.
      loss: the training loss; default: the compiled model's loss.
      vib: bool, default True. False skips the VIB masks (the other stages still run).
      epochs, finetune_epochs, batch_size: VIB (and ISS) training epochs, fine-tuning epochs
        (also the budget of the magnitude and clustering stages), batch size.
      learning_rate, mask_learning_rate, finetune_learning_rate: Adam rates of the weights,
        of the masks' mu/log_sigma2, and of fine-tuning.
      kl_factor: KL weight; default ``1 / min(n_train, 256) * min(1, 128 / width)``, width
        being the widest masked layer (`default_kl_factor`).
      input_kl_mult, hidden_kl_mult, dense_kl_mult: relative KL weights of the masks on
        recurrent inputs, on recurrent gates, and after hidden Dense layers. The defaults
        (mask rate 1e-2, hidden 3.0, distillation at T=2 with alpha 0.5) were tuned on
        JapaneseVowels validation data over three seeds (docs/benchmarks.md has the results).
      masked_gates: recurrent gates that carry masks (see ``add_vib_masks``); default
        ``STATE_GATES``, a mask on the hidden state (LSTM output gate, GRU candidate).
      warmup_epochs: epochs over which the KL weight ramps from 0 to ``kl_factor``.
      metric: what every choice is made on. None (default): accuracy for a classifier,
        the loss otherwise. "accuracy", "loss" (the training loss, as compiled or given), a
        Keras metric name or object ("mae", ``tf_keras.metrics.AUC()``; higher is better
        for names with accuracy, auc, precision, recall, cosine_similarity or iou, lower
        for the rest), or a ``tf_vib.selection.Scorer``.
      max_accuracy_drop: accepted validation-accuracy loss with the accuracy metric, as a
        fraction in [0, 1); default ``DEFAULT_MAX_DROP`` (0.005 = 0.5 point). Never finer than one
        validation sample: on 54 samples a candidate may lose one (1.85 points), since zero
        errors more would be the only finer criterion (``report.accuracy_floor`` records
        the floor used). Refused with another metric.
      max_metric_drop: the tolerance in the metric's own units (absolute: 0.002 on an MSE
        of 0.04 accepts 0.042); for accuracy, the same as ``max_accuracy_drop`` (give one of
        them). Default for a metric other than accuracy: ``DEFAULT_MAX_DROP`` times the
        baseline's absolute value (0.5% of its validation loss).
      on_miss: "original" (default) or "best". What comes back when no candidate meets the
        bound: a copy of the original model, or the best candidate (the smallest of the
        best-scoring ones; the search then costs more trials); with "best", a later stage
        whose model misses the bound is kept too. Either way ``report.misses`` lists the
        misses and a ``BoundNotMetWarning`` is issued.
      thresholds: log_alpha keep thresholds (>= 0) among which the model is chosen.
      unit_multiple: int >= 1, default ``UNIT_MULTIPLE`` (4); 1 turns it off, and so does
        ``vib=False``. After the choice, every VIB LSTM layer whose kept units are 1 to
        ``unit_multiple // 2`` above a multiple of it, and at least ``unit_multiple``, is
        trimmed to that multiple (13 or 14 to 12; 15 is left to the converter, which pads
        float files to 16), dropping the units its masks rank least informative (highest
        log_alpha); a layer whose masks cannot remove a unit (forget gate only) is left as
        it is. All such layers are trimmed together, in one trial: the trimmed model
        replaces the chosen one if it fine-tunes to at least the chosen one's validation
        accuracy.
        TFLite's fused LSTM runs a multiple of 4 units faster (see ``UNIT_MULTIPLE``);
        ``report.trim`` says what was tried (`trim_plan` picks the units).
      iss: float > 0 or None. ISS group-lasso strength (Wen et al. 2018) on each recurrent
        layer's unit groups; groups whose L2 norm ends below ``iss_threshold`` (default three
        times ``learning_rate``: Adam leaves collapsed groups near its step size) are zeroed
        and their units removed.
      low_rank: int rank or float energy in (0, 1], or None: SVD factorisation of the
        recurrent input kernels of the stripped model (``tf_vib.lowrank.low_rank``).
      magnitude_sparsity: float in (0, 1) or None: tfmot magnitude pruning of the result.
      clusters: int >= 2 or None: tfmot weight clustering of the result.
      distill: bool, default True. Fine-tune against the original model (Hinton distillation) with
        ``distill_temperature`` and weight ``distill_alpha`` on the labels' cross-entropy.
        Classifiers only: Hinton's loss compares softmax outputs, so any other model
        fine-tunes on its own loss (simpler than distilling with MSE to the original's
        outputs, which would add a weight to tune). Off (logged) for a model with a one-unit
        output or several outputs.
      validation_fraction: held-out share of ``train_data`` when no validation data is given.
      seed: seeds Keras, TensorFlow and NumPy for the run.
      verbose: 0 silent, 1 stage lines and Keras progress bars, 2 one line per epoch.

    Returns:
      A ``CompressionResult``; ``report.bound``, ``report.bound_met`` and ``report.misses``
      say how it stands against the bound.
    """
    require_tf_keras_model(model, "model")
    loss_fn = resolve_loss(model, loss)
    classifier = is_classifier(model, loss_fn)
    scorer = make_scorer(metric, loss=loss_fn, classifier=classifier)
    if len(model.outputs) > 1 and not scorer.is_accuracy:
        raise ValueError(
            f"`model` has {len(model.outputs)} outputs; compress() scores several outputs by their mean "
            f"accuracy only, so every output must be trained with a cross-entropy and `metric` must be "
            f"None or 'accuracy'; received metric={metric!r} with the loss {loss_fn!r}"
        )
    data = prepare_data(model, train_data, validation_data, test_data, validation_fraction, seed, loss_fn,
                        classifier=classifier)
    undistilled = why_not_distilled(model) if distill and classifier else None
    if undistilled:  # a one-unit or multi-output model: fine-tune on the labels alone
        data.notes.append(undistilled)
        distill = False
    settings = dict(
        epochs=check_int("epochs", epochs),
        finetune_epochs=check_int("finetune_epochs", finetune_epochs),
        warmup_epochs=check_int("warmup_epochs", warmup_epochs),
        batch_size=check_int("batch_size", batch_size, 1),
        learning_rate=check_float("learning_rate", learning_rate),
        mask_learning_rate=check_float("mask_learning_rate", mask_learning_rate),
        finetune_learning_rate=check_float("finetune_learning_rate", finetune_learning_rate),
        max_drop=_max_drop(scorer, max_accuracy_drop, max_metric_drop),
        on_miss=check_on_miss(on_miss),
        unit_multiple=check_int("unit_multiple", unit_multiple, 1),
        kl_factor=(default_kl_factor(num_samples(data.train[0]), masked_width(model)) if kl_factor is None
                   else check_float("kl_factor", kl_factor)),
        iss=optional("iss", iss, check_float),
        low_rank=optional("low_rank", low_rank, rank_or_energy),
        magnitude_sparsity=optional("magnitude_sparsity", magnitude_sparsity,
                                     lambda n, v: check_float(n, v, high=1.0)),
        clusters=optional("clusters", clusters, lambda n, v: check_int(n, v, 2)),
        distillation=({"alpha": check_float("distill_alpha", distill_alpha, allow_low=True, high=1.0 + 1e-12),
                       "beta": 1.0 - float(distill_alpha),
                       "temperature": check_float("distill_temperature", distill_temperature)}
                      if distill else None),
        verbose=verbose,
    )
    if not classifier:
        settings["distillation"] = None  # Hinton's loss compares softmax outputs
    settings["iss_threshold"] = (3 * settings["learning_rate"] if iss_threshold is None
                                 else check_float("iss_threshold", iss_threshold))
    for name, value in [("input_kl_mult", input_kl_mult), ("hidden_kl_mult", hidden_kl_mult),
                        ("dense_kl_mult", dense_kl_mult)]:
        check_float(name, value, allow_low=True)
    if not isinstance(thresholds, (list, tuple)) or not thresholds or any(
        isinstance(t, bool) or not isinstance(t, (int, float)) or not np.isfinite(t) or t < 0
        for t in thresholds
    ):
        raise ValueError(f"`thresholds` must be a non-empty list of numbers >= 0; received {thresholds!r}")
    if not vib and settings["iss"] is None and not any(
        settings[k] is not None for k in ("low_rank", "magnitude_sparsity", "clusters")
    ):
        raise ValueError("with vib=False, name at least one stage: iss=, low_rank=, "
                         "magnitude_sparsity= or clusters=")
    if verbose:
        for note in data.notes:
            print(f"[tf-vib] {note}", flush=True)
    structured = bool(vib) or settings["iss"] is not None
    vib_model = None
    if structured:
        vib_model = add_vib_masks(
            model, kl_factor=settings["kl_factor"] if vib else 0.0, input_kl_mult=input_kl_mult,
            hidden_kl_mult=hidden_kl_mult, dense_kl_mult=dense_kl_mult,
            masked_gates=STATE_GATES if masked_gates is None or not vib else masked_gates,
            feature_masks=bool(vib), dense_masks=bool(vib),
        )
    keras.utils.set_random_seed(seed)
    run = _Run(model, vib_model, data, loss_fn, settings, thresholds, bool(vib), scorer, classifier)
    if structured:
        plan = mask_plan(model, feature_masks=bool(vib), dense_masks=bool(vib))
        run.report.masks = [dataclasses.asdict(d) for d in plan.decisions]
    return run.run()


def _max_drop(scorer, max_accuracy_drop, max_metric_drop):
    """The tolerance asked for, checked; None: the default relative to the baseline's value."""
    if not scorer.is_accuracy and max_accuracy_drop is not None:
        raise ValueError(f"`max_accuracy_drop` applies to the accuracy metric; the metric here is "
                         f"{scorer.name!r}: give max_metric_drop (in its units) instead; received "
                         f"max_accuracy_drop={max_accuracy_drop!r}")
    if max_accuracy_drop is not None and max_metric_drop is not None:
        raise ValueError("give one of `max_accuracy_drop` and `max_metric_drop`; received "
                         f"max_accuracy_drop={max_accuracy_drop!r}, max_metric_drop={max_metric_drop!r}")
    if max_metric_drop is not None:
        return check_float("max_metric_drop", max_metric_drop, allow_low=True)
    if scorer.is_accuracy:
        return DEFAULT_MAX_DROP if max_accuracy_drop is None else check_accuracy_drop(max_accuracy_drop)
    return None


class _Run:
    """One compress() call: the stages, their timing, the bound checks and the report."""

    def __init__(self, model, vib_model, data, loss, settings, thresholds, vib, scorer, classifier):
        self.model, self.vib_model, self.data, self.loss = model, vib_model, data, loss
        self.s, self.thresholds, self.vib = settings, thresholds, vib
        self.scorer, self.classifier = scorer, classifier
        self.report = CompressionReport(
            max_accuracy_drop=settings["max_drop"] if scorer.is_accuracy else None, metric=scorer.name,
            higher_is_better=scorer.higher_is_better, on_miss=settings["on_miss"])
        self.histories = {}
        names = ["baseline"] + (["vib" if vib else "iss", "select"] if vib_model is not None else [])
        self.finetunes = vib_model is not None or settings["low_rank"] is not None
        names += [n for n, k in (("low_rank", "low_rank"), ("finetune", "finetune"),
                                 ("magnitude", "magnitude_sparsity"), ("cluster", "clusters"))
                  if (self.finetunes if k == "finetune" else settings[k] is not None)]
        self.total, self.count = len(names), 0
        self.threshold = None

    def start(self, name, detail):
        self.count += 1
        self.started = time.perf_counter()
        if self.s["verbose"]:
            print(f"[tf-vib] stage {self.count}/{self.total} {name}: {detail}", flush=True)

    def seconds(self):
        return time.perf_counter() - self.started

    def log(self, line):
        if self.s["verbose"]:
            print(f"[tf-vib]   {line}", flush=True)

    def record(self, name, stage_model, seconds, **extra):
        result = StageResult.measure(name, stage_model, self.scorer, self.data.val, self.data.test, seconds,
                                     classifier=self.classifier, **extra)
        self.report.stages.append(result)
        self.log(result.line())
        return result

    def check(self, result, model, previous, score=None, what="its model"):
        """The model the next stage starts from: the stage's ``model`` if it meets the bound
        on validation (``score``, default the recorded one) or ``on_miss`` is "best", else
        ``previous``; a miss goes into the report."""
        score = result.val_score if score is None else score
        result.bound_met = self.scorer.meets(score)
        if result.bound_met:
            return model
        result.kept = self.s["on_miss"] == "best"
        self.report.misses.append({"stage": result.stage, "what": what, "params": result.params,
                                   "val_score": float(score), "kept": result.kept})
        self.log(f"{result.stage}: validation {self.scorer.describe(score)} misses the bound "
                 f"({self.scorer.condition()}): "
                 + ("kept (on_miss='best')" if result.kept else "refused, the previous model goes on"))
        return model if result.kept else previous

    def tune(self, model, epochs, verbose=0, **kwargs):
        teacher = self.model if self.s["distillation"] else None
        return fine_tune(model, self.data.train, self.data.val, scorer=self.scorer, epochs=epochs,
                         batch_size=self.s["batch_size"], learning_rate=self.s["finetune_learning_rate"],
                         loss=self.loss, verbose=verbose, teacher=teacher,
                         distillation=self.s["distillation"], **kwargs)

    def bound(self, baseline):
        """Set the scorer's bound from the baseline's validation score."""
        drop = self.s["max_drop"]
        if self.scorer.is_accuracy:
            n_val = num_samples(self.data.val[0])
            fine = drop
            drop = max(drop, 1.0 / n_val)
            if drop > fine:
                self.log(f"max_accuracy_drop={fine:g} is finer than one of the {n_val} validation samples: "
                         f"candidates may lose one ({100 * drop:.2f} points)")
            self.report.accuracy_floor = float(baseline - drop)
        elif drop is None:
            drop = DEFAULT_MAX_DROP * abs(baseline)
        self.scorer = self.scorer.bounded(baseline, drop)
        self.report.bound, self.report.max_metric_drop = self.scorer.bound, float(drop)
        self.log(f"bound: validation {self.scorer.condition()}")

    def run(self):
        self.start("baseline", f"evaluating {self.model.name!r} on {num_samples(self.data.val[0])} validation samples")
        self.bound(self.record("baseline", self.model, self.seconds()).val_score)
        if not self.s["distillation"] and not self.classifier and self.s["verbose"]:
            self.log("not a classifier: fine-tuning on the model's own loss, without distillation")
        finetune_epochs = self.s["finetune_epochs"]
        small, tuned_epochs, chosen = _copy(self.model), 0, False
        if self.vib_model is not None:
            small, tuned_epochs, chosen = self.structured(small)
        low_rank, previous = None, small
        if self.s["low_rank"] is not None:
            self.start("low_rank", f"SVD factorisation of the recurrent input kernels ({self.s['low_rank']})")
            key = "rank" if isinstance(self.s["low_rank"], int) else "energy"
            small, info = factorise(small, **{key: self.s["low_rank"]})
            low_rank = self.record("low_rank", small, self.seconds(),
                                   ranks={name: i.rank for name, i in info.items() if i.factorised})
        if self.finetunes and (chosen or low_rank is not None):  # the fine-tune is the last step of those stages
            self.start("finetune", f"fine-tuning the plain model for {finetune_epochs - tuned_epochs} epochs")
            if low_rank is None:  # fine_tune works in place
                previous = _copy(small)
            history, _ = self.tune(small, finetune_epochs - tuned_epochs, verbose=self.s["verbose"])
            self.histories["finetune"] = history
            result = self.record("finetune", small, self.seconds(), **_sizes(small))
            small = self.check(result, small, previous)
            if low_rank is not None:
                low_rank.kept = result.kept
        train_ds, val_ds = self._datasets()
        teacher = self.model if self.s["distillation"] else None
        if self.s["magnitude_sparsity"] is not None:
            self.start("magnitude", f"tfmot magnitude pruning to {self.s['magnitude_sparsity']:g} sparsity")
            pruned, info = magnitude_prune(
                small, train_ds, sparsity=self.s["magnitude_sparsity"], epochs=max(1, finetune_epochs),
                validation_ds=val_ds, learning_rate=self.s["finetune_learning_rate"], loss=self.loss,
                metrics=[self.scorer.metric()], verbose=self.s["verbose"], teacher=teacher,
                distillation=self.s["distillation"],
            )
            self.histories["magnitude"] = info.history
            small = self.check(self.record("magnitude", pruned, self.seconds(), **_sizes(pruned)), pruned, small)
        if self.s["clusters"] is not None:
            self.start("cluster", f"tfmot weight clustering into {self.s['clusters']} values")
            clustered, info = cluster(
                small, train_ds, n_clusters=self.s["clusters"], epochs=max(1, finetune_epochs // 2),
                validation_ds=val_ds, loss=self.loss, metrics=[self.scorer.metric()], verbose=self.s["verbose"],
            )
            self.histories["cluster"] = info.history
            storage = clustered_storage(clustered)
            result = self.record("cluster", clustered, self.seconds(), **_sizes(clustered),
                                 clustered_bytes=int(storage.total_bytes))
            small = self.check(result, clustered, small)
        small.compile(optimizer=keras.optimizers.Adam(self.s["finetune_learning_rate"]), loss=self.loss,
                      metrics=[self.scorer.metric()])
        self.report.bound_met = not any(m["kept"] for m in self.report.misses)
        if self.report.misses:
            # stacklevel 3: the warning points at the caller's compress() line
            warnings.warn(" ".join(self.report.bound_lines()), BoundNotMetWarning, stacklevel=3)
        return CompressionResult(small, self.report, self.histories, vib_model=self.vib_model,
                                 threshold=self.threshold)

    def _datasets(self):
        from tf_vib._keras import tf

        batch = self.s["batch_size"]
        train = tf.data.Dataset.from_tensor_slices(self.data.train).shuffle(
            num_samples(self.data.train[0]), seed=0).batch(batch)
        return train, tf.data.Dataset.from_tensor_slices(self.data.val).batch(256)

    def structured(self, original):
        """VIB (and/or ISS) training, then the choice of the stripped model.

        Returns ``(model, fine-tuning epochs it had, whether it is the chosen candidate)``:
        the fine-tuned candidate, or ``original`` (a copy of the user's) when no candidate
        meets the bound and ``on_miss`` is "original".
        """
        s, vib_model, (x_train, y_train) = self.s, self.vib_model, self.data.train
        name = "vib" if self.vib else "iss"
        parts = (["VIB masks"] if self.vib else []) + ([f"ISS group lasso {s['iss']:g}"] if s["iss"] else [])
        what = " and ".join(parts)
        self.start(name, f"training {what} for {s['epochs']} epochs (kl_factor {s['kl_factor']:.3g})")
        trainer = TwoRateTrainer(vib_model, learning_rate=s["learning_rate"],
                                 mask_learning_rate=s["mask_learning_rate"] if self.vib else 1e-12)
        if s["iss"] is not None:
            trainer.add_loss(ISSPenalty(vib_model, s["iss"]))
        trainer.compile(optimizer=keras.optimizers.Adam(s["learning_rate"]), loss=self.loss,
                        metrics=[self.scorer.metric()])
        steps = int(np.ceil(num_samples(x_train) / s["batch_size"]))
        schedule = VIBSchedule(s["kl_factor"] if self.vib else 0.0, warmup_steps=s["warmup_epochs"] * steps)
        base_threshold = min(float(t) for t in self.thresholds)
        snapshots = Snapshots(vib_model, s["epochs"], base_threshold, scorer=self.scorer)
        if s["epochs"]:
            self.histories[name] = trainer.fit(
                x_train, y_train, validation_data=self.data.val, epochs=s["epochs"],
                batch_size=s["batch_size"], callbacks=[VIBScheduleCallback(schedule), snapshots],
                verbose=s["verbose"],
            ).history
        if s["iss"] is not None:
            zeroed = zero_small_groups(vib_model, s["iss_threshold"], criterion="l2")
            _mark_dead(vib_model, zeroed)
            self.log(f"ISS zeroed {sum(int(z.sum()) for z in zeroed.values())} units "
                     f"({', '.join(f'{k}: {int(v.sum())}' for k, v in zeroed.items())})")
            snapshots.candidates = []  # only the zeroed structure counts from here on
        if not snapshots.candidates:
            snapshots.take(max(s["epochs"] - 1, 0), self.scorer.score(vib_model, *self.data.val))
        seconds = self.seconds()

        self.start("select", f"the smallest candidate that fine-tunes to validation {self.scorer.condition()}")
        candidates = list(snapshots.candidates)
        smallest = min(candidates, key=lambda c: (c.params, -c.epoch))
        if self.vib:
            vib_model.set_weights(smallest.weights)
            for threshold in sorted(set(float(t) for t in self.thresholds) - {base_threshold}):
                plain = strip_masks(vib_model, threshold=threshold, min_units=1)
                candidates.append(Candidate(smallest.epoch, threshold, plain.count_params(),
                                            self.scorer.score(plain, *self.data.val), smallest.weights))
        epochs_run = {}

        def trial(plain, target):
            """Fine-tune until the candidate reaches ``target``, at most ``finetune_epochs``."""
            epochs_run[id(plain)] = 0
            start = self.scorer.score(plain, *self.data.val)
            if self.scorer.meets(start, target):
                return start
            stop = StopAtScore(target, self.scorer)
            _, tuned = self.tune(plain, s["finetune_epochs"], callbacks=[stop])
            epochs_run[id(plain)] = stop.epochs
            return tuned

        chosen, small, reached, trials = choose_smallest(
            vib_model, candidates, self.scorer, trial, search_on_miss=s["on_miss"] == "best",
            log=self.log if s["verbose"] else None)
        self.report.candidates = [_candidate_row(c) for c in candidates]
        self.report.trials = trials
        met = self.scorer.meets(reached)
        if self.vib and s["unit_multiple"] > 1 and (met or s["on_miss"] == "best"):
            trimmed = self.trim(chosen, trial, reached)
            if trimmed is not None:
                chosen, small, reached = trimmed
        vib_model.set_weights(chosen.weights)
        self.threshold = chosen.threshold
        result = self.record(name, strip_masks(vib_model, threshold=chosen.threshold, min_units=1), seconds,
                             threshold=chosen.threshold, epoch=chosen.epoch + 1, fine_tuned_score=reached)
        _, records = strip_masks(vib_model, threshold=chosen.threshold, min_units=1, return_records=True)
        self.report.layers = [dataclasses.asdict(r) for r in records]
        small = self.check(result, small, original, score=reached, what="the best candidate, fine-tuned")
        return small, epochs_run.get(id(small), 0), result.kept

    def trim(self, chosen, trial, target):
        """Try the chosen candidate with its LSTMs trimmed to a multiple of ``unit_multiple``.

        Returns ``(candidate, fine-tuned plain model, its score)`` when the trimmed model
        reaches ``target``, the chosen model's fine-tuned validation score (within the bound
        when that one is: a trim buys speed, not a loss of accuracy), else None; if a layer
        could be trimmed, ``report.trim`` says what was tried.
        """
        multiple = self.s["unit_multiple"]
        self.vib_model.set_weights(chosen.weights)
        dead, sizes = {}, {}
        for layer in self.vib_model.layers:
            cell = getattr(layer, "cell", None)
            if not isinstance(cell, VIBLSTMCell) or not set(unit_gates(cell)) & set(cell.vib_masks):
                continue  # only masks on the forget gate: no mask can remove a unit
            alive, score = alive_units(cell, chosen.threshold)
            trimmed = trim_plan(alive, score, multiple)
            if trimmed is not None:
                dead[layer.name] = alive & ~trimmed
                sizes[layer.name] = (int(alive.sum()), int(trimmed.sum()))
        if not dead:
            return None
        _mark_dead(self.vib_model, dead)
        weights = [w.copy() for w in self.vib_model.get_weights()]
        plain = strip_masks(self.vib_model, threshold=chosen.threshold, min_units=1)
        masked = self.scorer.score(plain, *self.data.val)
        tuned = trial(plain, target)
        accepted = self.scorer.meets(tuned, target)
        what = ", ".join(f"{name} {a} -> {b} units" for name, (a, b) in sizes.items())
        self.log(f"trimmed to a multiple of {multiple} ({what}): validation {self.scorer.describe(masked)} "
                 f"before, {tuned:.4g} fine-tuned: "
                 + ("accepted" if accepted else f"refused, target {self.scorer.describe(target)}"))
        candidate = Candidate(chosen.epoch, chosen.threshold, plain.count_params(), masked, weights)
        self.report.candidates.append(_candidate_row(candidate))
        self.report.trials.append((candidate.params, masked, tuned))
        self.report.trim = {"layers": {name: {"units": a, "trimmed_units": b} for name, (a, b) in sizes.items()},
                            "params": candidate.params, "accuracy_before_tuning": masked,
                            "fine_tuned_accuracy": tuned, "target": target, "accepted": bool(accepted)}
        return (candidate, plain, tuned) if accepted else None


def trim_plan(alive, score, multiple):
    """The units to keep when trimming a layer to a multiple of ``multiple``, or None.

    ``alive`` (bool) marks the layer's kept units and ``score`` their log_alpha (large means
    noise). When ``alive`` holds 1 to ``multiple // 2`` units above a multiple of
    ``multiple``, and at least ``multiple``, the noisiest of them are dropped (ties: the
    later unit first); otherwise there is nothing to trim: a layer nearer the multiple above
    is left to the converter, whose zero-unit padding reaches it in the float files at no
    accuracy cost.
    """
    alive = np.asarray(alive, bool)
    kept = int(alive.sum())
    extra = kept % multiple
    if extra == 0 or extra > multiple // 2 or kept - extra < multiple:
        return None
    units = np.flatnonzero(alive)
    noisiest = units[np.lexsort((-units, -np.asarray(score, float)[units]))[:extra]]
    return alive & ~np.isin(np.arange(len(alive)), noisiest)


def _candidate_row(candidate):
    """A candidate as the report holds it: everything but its weights."""
    return {k: v for k, v in dataclasses.asdict(candidate).items() if k != "weights"}


def _mark_dead(vib_model, zeroed):
    """Prune the masks of the units marked in ``zeroed`` ({layer name: bool vector}) so that
    strip_masks removes them: ISS-zeroed units (their h is 0) and trimmed ones."""
    for layer in vib_model.layers:
        dead = zeroed.get(layer.name)
        if dead is None or not dead.any():
            continue
        masks = layer.cell.vib_masks
        gate = next((g for g in unit_gates(layer.cell) if g in masks), None)
        if gate is None:
            raise ValueError(f"layer {layer.name!r} has no mask on a gate that can remove a unit")
        mask = masks[gate]
        mask.mu.assign(np.where(dead, 0.0, mask.mu.numpy()).astype("float32"))
        # log_alpha = log_sigma2 - log(1e-8) = 28.4: pruned at any keep threshold tried
        mask.log_sigma2.assign(np.where(dead, 10.0, mask.log_sigma2.numpy()).astype("float32"))


def _sizes(model):
    weights = model.get_weights()
    return {"nonzero_params": int(nonzero_params(model)), "gzip_bytes_float32": int(gzip_size(weights))}
