"""compress(): from a trained Keras model to a small plain one, with a report."""

import dataclasses
import time

import numpy as np

from tf_vib._keras import keras, require_tf_keras_model
from tf_vib.compression_report import CompressionReport, StageResult
from tf_vib.selection import Candidate, choose_smallest, fine_tune
from tf_vib.surgery import strip_masks
from tf_vib.training import (
    TwoRateTrainer,
    accuracy,
    as_arrays,
    check_data,
    resolve_loss,
    stratified_holdout,
    vib_layers,
)
from tf_vib.wrap import add_vib_masks

__all__ = ["compress", "CompressionResult", "DEFAULT_THRESHOLDS"]

#: log_alpha thresholds tried when choosing the model: 0 prunes the most.
DEFAULT_THRESHOLDS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


@dataclasses.dataclass
class CompressionResult:
    """What ``compress`` returns.

    Attributes:
      model: the compressed plain tf_keras model (no VIB layer inside).
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


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"`{name}` must be an integer >= 0; received {value!r}")
    return int(value)


def _positive_float(name, value, *, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be a finite number {bound}; received {value!r}")
    return float(value)


class _Stages:
    """Runs the stages, timing each and printing one line per stage."""

    def __init__(self, verbose, total):
        self.verbose = verbose
        self.total = total
        self.count = 0

    def start(self, name, detail):
        self.count += 1
        self.started = time.perf_counter()
        if self.verbose:
            print(f"[tf-vib] stage {self.count}/{self.total} {name}: {detail}", flush=True)

    def seconds(self):
        return time.perf_counter() - self.started


def compress(
    model,
    train_data,
    *,
    validation_data=None,
    test_data=None,
    loss=None,
    epochs=100,
    finetune_epochs=60,
    batch_size=32,
    learning_rate=1e-3,
    mask_learning_rate=5e-2,
    finetune_learning_rate=1e-3,
    kl_factor=None,
    input_kl_mult=1.0,
    hidden_kl_mult=1.0,
    dense_kl_mult=1.0,
    masked_gates=None,
    warmup_epochs=5,
    max_accuracy_drop=0.005,
    thresholds=DEFAULT_THRESHOLDS,
    validation_fraction=0.2,
    seed=0,
    verbose=1,
):
    """Compress a trained tf_keras LSTM/GRU model with VIB masks; return a small plain model.

    The model is copied with VIB layers in place of its recurrent layers (a FeatureMask on
    their inputs, gate masks in the cells) and after its hidden Dense layers, warm-started
    from the trained weights, and trained on ``cross_entropy + kl_factor * sum(kl_mult *
    KL)`` (Dai et al. 2018) with a higher learning rate for the masks. The epoch kept is the
    one with the fewest parameters whose validation accuracy stays within
    ``max_accuracy_drop`` of the original's. The keep threshold is then chosen the same way
    over ``thresholds``, the masks are stripped (``strip_masks``) and the plain model is
    fine-tuned, keeping its best validation epoch.

    Args:
      model: a trained tf_keras Sequential or functional classifier. Not modified.
      train_data: ``(x, y)`` arrays or a ``tf.data.Dataset`` of (x, y), labels as class
        indices or one-hot rows.
      validation_data: same forms. Used for every choice; when None, a stratified
        ``validation_fraction`` of ``train_data`` is held out.
      test_data: optional, only reported, never used for a choice.
      loss: the training loss; default: the compiled model's loss.
      epochs, finetune_epochs, batch_size: VIB training epochs, fine-tuning epochs, batch size.
      learning_rate, mask_learning_rate, finetune_learning_rate: Adam rates of the weights,
        of the masks' mu/log_sigma2, and of fine-tuning.
      kl_factor: KL weight; default ``1 / n_train`` (the per-sample ELBO weighting).
      input_kl_mult, hidden_kl_mult, dense_kl_mult: relative KL weights of the masks on
        recurrent inputs, on recurrent gates, and after hidden Dense layers.
      masked_gates: recurrent gates that carry masks (see ``add_vib_masks``).
      warmup_epochs: epochs over which the KL weight ramps from 0 to ``kl_factor``.
      max_accuracy_drop: accepted validation-accuracy loss, as a fraction (0.005 = 0.5 point).
      thresholds: log_alpha thresholds (>= 0) among which the keep threshold is chosen.
      validation_fraction: held-out share of ``train_data`` when no validation data is given.
      seed: seeds Keras, TensorFlow and NumPy for the run.
      verbose: 0 silent, 1 stage lines and Keras progress bars, 2 one line per epoch.

    Returns:
      A ``CompressionResult``.
    """
    require_tf_keras_model(model, "model")
    input_rank = len(model.input_shape) if not isinstance(model.input_shape, list) else 0
    x_train, y_train = as_arrays(train_data, "train_data", input_rank)
    labels_train = check_data(model, x_train, y_train, "train_data")
    if validation_data is not None:
        x_val, y_val = as_arrays(validation_data, "validation_data", input_rank)
        labels_val = check_data(model, x_val, y_val, "validation_data")
    else:
        fraction = _positive_float("validation_fraction", validation_fraction)
        if fraction >= 1:
            raise ValueError(f"`validation_fraction` must be < 1; received {validation_fraction!r}")
        train_idx, val_idx = stratified_holdout(labels_train, fraction, seed)
        x_val, y_val, labels_val = x_train[val_idx], y_train[val_idx], labels_train[val_idx]
        x_train, y_train, labels_train = x_train[train_idx], y_train[train_idx], labels_train[train_idx]
    test = None
    if test_data is not None:
        x_test, y_test = as_arrays(test_data, "test_data", input_rank)
        test = (x_test, check_data(model, x_test, y_test, "test_data"))
    loss_fn = resolve_loss(model, loss)
    epochs = _positive_int("epochs", epochs)
    finetune_epochs = _positive_int("finetune_epochs", finetune_epochs)
    warmup_epochs = _positive_int("warmup_epochs", warmup_epochs)
    batch_size = _positive_int("batch_size", batch_size) or 1
    for name, value in [("learning_rate", learning_rate), ("mask_learning_rate", mask_learning_rate),
                        ("finetune_learning_rate", finetune_learning_rate)]:
        _positive_float(name, value)
    for name, value in [("input_kl_mult", input_kl_mult), ("hidden_kl_mult", hidden_kl_mult),
                        ("dense_kl_mult", dense_kl_mult), ("max_accuracy_drop", max_accuracy_drop)]:
        _positive_float(name, value, allow_zero=True)
    kl_factor = 1.0 / len(x_train) if kl_factor is None else _positive_float("kl_factor", kl_factor)
    if not thresholds or any(
        isinstance(t, bool) or not isinstance(t, (int, float)) or not np.isfinite(t) or t < 0
        for t in thresholds
    ):
        raise ValueError(f"`thresholds` must be a non-empty list of numbers >= 0; received {thresholds!r}")
    vib_model = add_vib_masks(
        model, kl_factor=kl_factor, input_kl_mult=input_kl_mult, hidden_kl_mult=hidden_kl_mult,
        dense_kl_mult=dense_kl_mult, masked_gates=masked_gates,
    )
    keras.utils.set_random_seed(seed)

    stages = _Stages(verbose, 4)
    report = CompressionReport(max_accuracy_drop=max_accuracy_drop)
    histories = {}

    def record(name, stage_model, seconds, **extra):
        result = StageResult.measure(name, stage_model, x_val, labels_val, test, seconds, **extra)
        report.stages.append(result)
        if verbose:
            print(f"[tf-vib]   {result.line()}", flush=True)
        return result

    stages.start("baseline", f"evaluating {model.name!r} on {len(x_val)} validation samples")
    baseline = record("baseline", model, stages.seconds())
    floor = baseline.val_accuracy - max_accuracy_drop - 1e-9

    stages.start("vib", f"training masks for {epochs} epochs (kl_factor {kl_factor:.3g})")
    trainer = TwoRateTrainer(vib_model, learning_rate=learning_rate, mask_learning_rate=mask_learning_rate)
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss_fn, metrics=["accuracy"])
    steps_per_epoch = int(np.ceil(len(x_train) / batch_size))
    warmup = _KLWarmup(vib_model, kl_factor, warmup_epochs * steps_per_epoch)
    base_threshold = min(float(t) for t in thresholds)
    snapshots = _Snapshots(vib_model, epochs, base_threshold)
    callbacks = [warmup, snapshots]
    if epochs:
        history = trainer.fit(
            x_train, y_train, validation_data=(x_val, y_val), epochs=epochs, batch_size=batch_size,
            callbacks=callbacks, verbose=verbose,
        )
        histories["vib"] = history.history
    else:
        snapshots.take(-1, accuracy(vib_model, x_val, labels_val))
    vib_seconds = stages.seconds()

    stages.start("select", "the smallest candidate that fine-tunes back within "
                 f"{100 * max_accuracy_drop:g} points of validation accuracy")
    candidates = list(snapshots.candidates)
    smallest = min(candidates, key=lambda c: (c.params, -c.epoch))
    vib_model.set_weights(smallest.weights)
    for threshold in sorted(set(float(t) for t in thresholds) - {base_threshold}):
        plain = strip_masks(vib_model, threshold=threshold, min_units=1)
        candidates.append(Candidate(smallest.epoch, threshold, plain.count_params(),
                                    accuracy(plain, x_val, labels_val), smallest.weights))
    selection_epochs = max(1, finetune_epochs // 3) if finetune_epochs else 0
    tune_kwargs = dict(train=(x_train, y_train), val=(x_val, y_val), labels_val=labels_val,
                       batch_size=batch_size, learning_rate=finetune_learning_rate, loss=loss_fn,
                       verbose=0)
    chosen, small, _, trials = choose_smallest(
        vib_model, candidates, floor,
        lambda plain: fine_tune(plain, epochs=selection_epochs, **tune_kwargs)[1],
        log=(lambda line: print(f"[tf-vib]   {line}", flush=True)) if verbose else None,
    )
    report.candidates = [dataclasses.asdict(c) | {"weights": None} for c in candidates]
    report.trials = trials
    vib_model.set_weights(chosen.weights)
    threshold = chosen.threshold
    record("vib", strip_masks(vib_model, threshold=threshold, min_units=1), vib_seconds,
           threshold=threshold, epoch=chosen.epoch + 1)
    selection_seconds = stages.seconds()

    stages.start("finetune", f"fine-tuning the plain model for {finetune_epochs} epochs")
    history, _ = fine_tune(small, epochs=finetune_epochs - selection_epochs,
                           **{**tune_kwargs, "verbose": verbose})
    histories["finetune"] = history
    record("finetune", small, selection_seconds + stages.seconds())
    report.layers = _layer_rows(vib_model, threshold)
    return CompressionResult(small, report, histories, vib_model=vib_model, threshold=threshold)


def _layer_rows(vib_model, threshold):
    _, records = strip_masks(vib_model, threshold=threshold, min_units=1, return_records=True)
    return [dataclasses.asdict(r) for r in records]


class _Snapshots(keras.callbacks.Callback):
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


class _KLWarmup(keras.callbacks.Callback):
    """Ramps every VIB layer's ``kl_weight`` linearly from 0 to ``kl_factor``."""

    def __init__(self, vib_model, kl_factor, steps):
        super().__init__()
        self.layers = vib_layers(vib_model)
        self.kl_factor = kl_factor
        self.steps = steps
        self.step = 0

    def on_train_batch_begin(self, batch, logs=None):
        ramp = 1.0 if self.steps == 0 else min(1.0, self.step / self.steps)
        for layer in self.layers:
            layer.kl_weight.assign(self.kl_factor * ramp)
        self.step += 1
