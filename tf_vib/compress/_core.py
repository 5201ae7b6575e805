"""compress(): from a trained Keras model to a small plain one, with a report."""

import dataclasses
import warnings

import numpy as np

from tf_vib import bridge
from tf_vib._checks import (
    BadArgument,
    check_checkpoint_dir,
    check_choice,
    check_float,
    check_int,
    optional,
)
from tf_vib._graph import graph_nodes
from tf_vib._keras import keras, require_tf_keras_model, tf
from tf_vib.compress._defaults import (
    DEFAULT_MAX_DROP,
    DEFAULT_THRESHOLDS,
    UNIT_MULTIPLE,
    default_kl_factor,
    default_warmup_epochs,
    short_warmup,
    too_few_updates,
)
from tf_vib.compress._prepare import (
    check_accuracy_drop,
    prepare_data,
    rank_or_energy,
    why_not_distilled,
)
from tf_vib.compress._resume import Checkpoints, run_fingerprint
from tf_vib.compress._run import RunSpec
from tf_vib.compress._run import run_in_scope as _run_in_scope
from tf_vib.compress._scorer import (
    check_on_miss,
    is_classifier,
    make_scorer,
)
from tf_vib.compress._stream import batches_of, raise_stream_problem, samples_of
from tf_vib.compress._training import resolve_loss
from tf_vib.lowrank import KERNELS
from tf_vib.wrap import mask_plan

__all__ = ["compress", "masked_width"]


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
    frame_masks=False,
    warmup_epochs=None,
    metric=None,
    max_accuracy_drop=None,
    max_metric_drop=None,
    on_miss="original",
    thresholds=DEFAULT_THRESHOLDS,
    unit_multiple=UNIT_MULTIPLE,
    iss=None,
    iss_threshold=None,
    low_rank=None,
    low_rank_kernels="input",
    magnitude_sparsity=None,
    clusters=None,
    distill=True,
    distill_temperature=2.0,
    distill_alpha=0.5,
    validation_fraction=0.2,
    seed=0,
    strategy=None,
    checkpoint_dir=None,
    verbose=1,
):
    """Compress a trained tf_keras LSTM/GRU model; return a small plain model and a report.

    The VIB stage copies the model with VIB layers in place of its recurrent layers (a
    FeatureMask on their inputs, gate masks in the cells) and after its hidden Dense layers,
    warm-started from the trained weights, and trains it on ``loss + kl_factor *
    sum(kl_mult * KL)`` (Dai et al. 2018) with a higher learning rate for the masks, driven by
    a ``VIBSchedule`` (KL warm-up). Snapshots of it, stripped at the keep thresholds, are the
    candidates; the smallest that fine-tunes back within the bound is kept
    (``tf_vib.compress._candidates``), then fine-tuned (with knowledge distillation from the original
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
      model: a trained Sequential or functional model, tf_keras or Keras 3 (the result comes
        back in the same Keras; the work is done on a tf_keras twin), not modified: a classifier
        (every output trained with a cross-entropy: softmax, logits or a sigmoid unit) or
        any model with a Keras loss (a forecaster on MSE, say).
      train_data: ``(x, y)`` arrays or a ``tf.data.Dataset`` of (x, y). ``x``: one array, or
        for a model with several inputs a list in ``model.inputs`` order or a dict keyed by
        input name (integer token ids keep their dtype); ``y`` likewise per output. For a
        classifier: class indices or one-hot rows, per step (``(n, T)`` or ``(n, T, C)``) for
        a per-step output, 0/1 for a one-unit sigmoid output; labels are converted to what
        the loss takes when that is unambiguous (one-hot rows to indices for a sparse loss,
        indices to one-hot rows for a categorical one). Otherwise: targets of the output's
        shape. Sample weights are refused, and so are arrays of sequences of different
        lengths (pad them with ``tf_vib.datasets.pad_sequences``). A dataset is streamed,
        never read into arrays: batched (its batches as they are, e.g. ``padded_batch``) or
        batched here by ``batch_size``; its first 8 batches are checked before training,
        every later one as it streams (docs/scaling.md); it is not shuffled here.
      validation_data: same forms; every choice is made on it. When None,
        ``validation_fraction`` of ``train_data`` is held out (stratified by class for a
        classifier; of a dataset, its first elements or batches, which needs its
        cardinality known, and a dataset not reshuffled on each pass, or the hold-out moves).
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
      frame_masks: bool, default False. Frame pruning: a ``TimeMask`` (one VIB gate per
        frame position) on the first recurrent layer, trained with the other masks; the
        returned model then takes only the kept frames, ``(n, K, ...)``, listed in
        ``report.frames`` (``tf_vib.datasets.select_frames`` picks them out of clips). The
        data stay T-frame clips. Refused before training for a model whose frames cannot be
        skipped exactly (see ``add_vib_masks``) and with ``vib=False``.
      warmup_epochs: int >= 0 or None (default): epochs over which the KL weight ramps
        linearly from 0 to ``kl_factor``. None: ``min(5, epochs // 3)``
        (`default_warmup_epochs`): 5 from 15 epochs on, a third of a shorter run (8 epochs: 2;
        2 or fewer: 0, the full weight from the start), so that the masks train at the full
        KL weight for at least two thirds of the epochs. Given and ``>= epochs``, the weight
        never reaches ``kl_factor`` (it peaks at about ``epochs / warmup_epochs`` of it) and
        little or nothing is pruned: a ``UserWarning`` says so before training and
        ``report.notes`` records it. So does a run too short for any mask to be pruned:
        fewer than ``1 / mask_learning_rate`` mask updates (``epochs`` x batches an epoch;
        100 at the default rate), since Adam moves a mask by about its rate per update
        and one needs its mean to travel from 1 to near 0.
      metric: what every choice is made on. None (default): accuracy for a classifier,
        the loss otherwise. "accuracy", "loss" (the training loss, as compiled or given), a
        Keras metric name or object ("mae", ``tf_keras.metrics.AUC()``; higher is better
        for names with accuracy, auc, precision, recall, cosine_similarity or iou, lower
        for the rest), or a ``tf_vib.Scorer``.
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
        recurrent layers' kernels in the stripped model (``tf_vib.lowrank.low_rank``).
      low_rank_kernels: ``"input"`` (default), ``"recurrent"`` or ``"both"``: which kernels
        ``low_rank`` factorises (the recurrent kernel of LSTM layers only; such a layer
        becomes a ``LowRankLSTMCell`` RNN, which TFLite runs as a loop, not its fused op).
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
      strategy: a ``tf.distribute.Strategy``, default the one in scope (so calling
        compress() inside ``strategy.scope()`` works too; outside any, the default one
        device). Every training phase runs under it: the VIB copy, its masks, the
        optimizers and every fine-tuned model are created in its scope, ``batch_size`` is
        the global batch, split across replicas, and the KL terms and the data loss are
        reduced as Keras reduces them, so the objective is the one of a single device.
        Choices are made on predictions of the whole validation set (docs/scaling.md).
      checkpoint_dir: a folder, or None (default). The run saves its state there as it goes
        (Keras's ``BackupAndRestore`` for every fit: VIB weights and masks, both optimizers,
        the epoch; ``tf.train.Checkpoint`` of each candidate and of each fine-tuned trial;
        a JSON manifest of what is finished). Called again with the same arguments after a
        crash, compress() resumes from the last checkpoint, its log saying from where; a
        checkpoint of another model, data or arguments is refused (docs/scaling.md).
      verbose: 0 silent, 1 stage lines and Keras progress bars, 2 one line per epoch.

    Returns:
      A ``CompressionResult``; ``report.bound``, ``report.bound_met`` and ``report.misses``
      say how it stands against the bound.
    """
    checkpoint_path = check_checkpoint_dir(checkpoint_dir)
    user_model = model
    model, _ = bridge.to_internal(model, "model")  # a Keras 3 model trains as its tf_keras twin
    if model is not user_model:
        model = bridge.compiled_twin(user_model, model)
    require_tf_keras_model(model, "model")
    loss_fn = resolve_loss(model, loss)
    classifier = is_classifier(model, loss_fn)
    scorer = make_scorer(metric, loss=loss_fn, classifier=classifier, model=model)
    if len(model.outputs) > 1 and not scorer.is_accuracy:
        raise ValueError(
            f"`model` has {len(model.outputs)} outputs; compress() scores several outputs by their mean "
            f"accuracy only, so every output must be trained with a cross-entropy and `metric` must be "
            f"None or 'accuracy'; received metric={metric!r} with the loss {loss_fn!r}"
        )
    batch_size = check_int("batch_size", batch_size, 1)
    epochs = check_int("epochs", epochs, 0)
    # every setting that does not read the data is checked before the data are (a streamed
    # dataset may take a counting pass)
    settings = dict(
        epochs=epochs,
        finetune_epochs=check_int("finetune_epochs", finetune_epochs, 0),
        warmup_epochs=(default_warmup_epochs(epochs) if warmup_epochs is None
                       else check_int("warmup_epochs", warmup_epochs, 0, allow=(None,))),  # says "or None"
        batch_size=batch_size,
        learning_rate=check_float("learning_rate", learning_rate),
        mask_learning_rate=check_float("mask_learning_rate", mask_learning_rate),
        finetune_learning_rate=check_float("finetune_learning_rate", finetune_learning_rate),
        max_drop=_max_drop(scorer, max_accuracy_drop, max_metric_drop),
        on_miss=check_on_miss(on_miss),
        unit_multiple=check_int("unit_multiple", unit_multiple, 1),
        kl_factor=optional("kl_factor", kl_factor, check_float),
        iss=optional("iss", iss, check_float),
        low_rank=optional("low_rank", low_rank, rank_or_energy),
        low_rank_kernels=check_choice("low_rank_kernels", low_rank_kernels, KERNELS),
        magnitude_sparsity=optional("magnitude_sparsity", magnitude_sparsity,
                                     lambda n, v: check_float(n, v, high=1.0)),
        clusters=optional("clusters", clusters, lambda n, v: check_int(n, v, 2)),
        distillation=({"alpha": check_float("distill_alpha", distill_alpha, allow_low=True, high=1.0 + 1e-12),
                       "beta": 1.0 - float(distill_alpha),
                       "temperature": check_float("distill_temperature", distill_temperature)}
                      if distill and classifier else None),  # Hinton's loss compares softmax outputs
        verbose=verbose,
    )
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
    if frame_masks and not vib:
        raise ValueError("`frame_masks=True` needs the VIB stage (vib=True): the frames are pruned by VIB "
                         f"masks; received frame_masks={frame_masks!r} with vib={vib!r}")
    strategy = _strategy(strategy)
    if checkpoint_path is not None and strategy.extended._in_multi_worker_mode():
        raise BadArgument("`checkpoint_dir` is not supported with several workers yet "
                          f"({type(strategy).__name__}): resume works on one machine "
                          "(MirroredStrategy or none); pass checkpoint_dir=None")
    data = prepare_data(model, train_data, validation_data, test_data, validation_fraction, seed, loss_fn,
                        classifier=classifier, batch_size=batch_size)
    undistilled = why_not_distilled(model) if settings["distillation"] else None
    if undistilled:  # a one-unit or multi-output model: fine-tune on the labels alone
        data.notes.append(undistilled)
        settings["distillation"] = None
    if settings["kl_factor"] is None:
        settings["kl_factor"] = default_kl_factor(samples_of(data.train), masked_width(model))
    steps = batches_of(data.train, settings["batch_size"])
    notes = [] if warmup_epochs is None or not vib else short_warmup(epochs, settings["warmup_epochs"], steps)
    if vib:
        notes += too_few_updates(epochs, steps, settings["mask_learning_rate"])
    for note in notes:  # before any training: the run would prune little or nothing
        warnings.warn(note, UserWarning, stacklevel=2)
    if verbose:
        for note in data.notes:
            print(f"[tf-vib] {note}", flush=True)
    with strategy.scope():
        spec = RunSpec(
            model=model, user_model=user_model, data=data, loss=loss_fn, settings=settings,
            thresholds=thresholds, vib=bool(vib), scorer=scorer, classifier=classifier,
            kl_mults=(input_kl_mult, hidden_kl_mult, dense_kl_mult), masked_gates=masked_gates, seed=seed,
            frame_masks=frame_masks, distributed=tf.distribute.has_strategy(), notes=tuple(notes))
        if checkpoint_path is not None:
            spec = dataclasses.replace(spec, checkpoints=Checkpoints(
                checkpoint_path, run_fingerprint(spec),
                log=lambda line: verbose and print(f"[tf-vib]   {line}", flush=True)))
        try:
            return _run_in_scope(spec)
        except tf.errors.OpError as error:  # a streamed dataset's checks failed on a later batch
            raise_stream_problem(data, error)
            raise


def _strategy(strategy):
    if strategy is None:
        return tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.Strategy):
        raise BadArgument(f"`strategy` must be None or a tf.distribute.Strategy (MirroredStrategy, "
                          f"MultiWorkerMirroredStrategy, ...); received {strategy!r:.80}")
    return strategy


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
