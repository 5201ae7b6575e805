"""compress()'s structured stage: VIB (and/or ISS) training, the choice of the smallest
stripped candidate that fine-tunes back to the bound, and the trim to a unit multiple."""

import dataclasses

import numpy as np

from tf_vib._keras import keras
from tf_vib.compress._candidates import (
    Candidate,
    Snapshots,
    StopAtScore,
    choose_smallest,
    frame_count,
)
from tf_vib.compress._iss import ISSPenalty, zero_small_groups
from tf_vib.compress._schedules import VIBSchedule, VIBScheduleCallback
from tf_vib.compress._stream import batches_of, fit_data
from tf_vib.compress._training import TwoRateTrainer
from tf_vib.layers.vib_lstm import VIBLSTMCell
from tf_vib.surgery import alive_units, strip_masks, unit_gates

__all__ = ["train_and_choose", "trim", "trim_plan", "candidate_row", "mark_dead"]


def train_and_choose(run, original):
    """VIB (and/or ISS) training, then the choice of the stripped model.

    Returns ``(model, fine-tuning epochs it had, whether it is the chosen candidate)``:
    the fine-tuned candidate, or ``original`` (a copy of the user's) when no candidate
    meets the bound and ``on_miss`` is "original".
    """
    s, vib_model = run.s, run.vib_model
    name = "vib" if run.vib else "iss"
    parts = (["VIB masks"] if run.vib else []) + ([f"ISS group lasso {s['iss']:g}"] if s["iss"] else [])
    what = " and ".join(parts)
    ramp = f", KL warm-up {s['warmup_epochs']} epochs" if run.vib else ""
    run.start(name, f"training {what} for {s['epochs']} epochs (kl_factor {s['kl_factor']:.3g}{ramp})")
    trainer = TwoRateTrainer(vib_model, mask_learning_rate=s["mask_learning_rate"] if run.vib else 1e-12)
    if s["iss"] is not None:
        trainer.add_loss(ISSPenalty(vib_model, s["iss"]))
    trainer.compile(optimizer=keras.optimizers.Adam(s["learning_rate"]), loss=run.loss,
                    metrics=[run.scorer.metric()])
    steps = batches_of(run.data.train, s["batch_size"])
    schedule = VIBSchedule(s["kl_factor"] if run.vib else 0.0, warmup_steps=s["warmup_epochs"] * steps)
    base_threshold = min(float(t) for t in run.thresholds)
    snapshots = Snapshots(vib_model, s["epochs"], base_threshold, scorer=run.scorer)
    checkpoints = run.checkpoints
    if checkpoints is not None and s["epochs"] and checkpoints.vib_done(name, vib_model, None):
        for row in checkpoints.stage(name).get("candidates", []):
            snapshots.candidates.append(Candidate.from_record(row, checkpoints._read(vib_model, row["path"])))
        checkpoints._read_into(vib_model, checkpoints.stage(name)["path"])
        run.histories[name] = checkpoints.history(name)
    elif s["epochs"]:
        scheduler = VIBScheduleCallback(schedule)
        callbacks = [scheduler, snapshots]
        if checkpoints is not None:  # the backup restores first, then the schedule hardens what it restored
            backup, _ = checkpoints.vib_callback(name, snapshots, s["epochs"], steps, scheduler)
            callbacks = [backup, scheduler]
        run.histories[name] = trainer.fit(
            **fit_data(run.data.train, run.data.val, s["batch_size"]), epochs=s["epochs"],
            callbacks=callbacks, verbose=s["verbose"],
        ).history
        if checkpoints is not None:
            checkpoints.vib_done(name, vib_model, run.histories[name])
    if s["iss"] is not None:
        zeroed = zero_small_groups(vib_model, s["iss_threshold"], criterion="l2")
        mark_dead(vib_model, zeroed)
        run.log(f"ISS zeroed {sum(int(z.sum()) for z in zeroed.values())} units "
                 f"({', '.join(f'{k}: {int(v.sum())}' for k, v in zeroed.items())})")
        snapshots.candidates = []  # only the zeroed structure counts from here on
    if not snapshots.candidates:
        snapshots.take(max(s["epochs"] - 1, 0), run.scorer.score_on(vib_model, run.data.val))
    seconds = run.seconds()

    run.start("select", f"the smallest candidate that fine-tunes to validation {run.scorer.condition()}")
    candidates = list(snapshots.candidates)
    smallest = min(candidates, key=lambda c: (c.cost, c.params, -c.epoch))
    if run.vib:
        vib_model.set_weights(smallest.weights)
        for threshold in sorted(set(float(t) for t in run.thresholds) - {base_threshold}):
            plain = strip_masks(vib_model, threshold=threshold, min_units=1, input_frames="all")
            candidates.append(Candidate(smallest.epoch, threshold, plain.count_params(),
                                        run.scorer.score_on(plain, run.data.val), smallest.weights,
                                        frame_count(vib_model, threshold)))
    epochs_run = {}

    def trial(plain, target):
        """Fine-tune until the candidate reaches ``target``, at most ``finetune_epochs``."""
        epochs_run[id(plain)] = 0
        start = run.scorer.score_on(plain, run.data.val)
        if run.scorer.meets(start, target):
            return start
        def tune(extra=()):
            stop = StopAtScore(target, run.scorer)
            _, tuned = run.tune(plain, s["finetune_epochs"], callbacks=[*extra, stop])
            return tuned, stop.epochs

        if run.checkpoints is None:
            tuned, epochs_run[id(plain)] = tune()
        else:  # a trial finished before a kill is read back, one cut short resumes
            tuned, epochs_run[id(plain)] = run.checkpoints.trial(plain, tune, s["finetune_epochs"])
        return tuned

    chosen, small, reached, trials = choose_smallest(
        vib_model, candidates, run.scorer, trial, search_on_miss=s["on_miss"] == "best",
        log=run.log if s["verbose"] else None)
    run.report.candidates = [candidate_row(c) for c in candidates]
    run.report.trials = trials
    met = run.scorer.meets(reached)
    if run.vib and s["unit_multiple"] > 1 and (met or s["on_miss"] == "best"):
        trimmed = trim(run, chosen, trial, reached)
        if trimmed is not None:
            chosen, small, reached = trimmed
    vib_model.set_weights(chosen.weights)
    run.threshold = chosen.threshold
    result = run.record(name, strip_masks(vib_model, threshold=chosen.threshold, min_units=1, input_frames="all"), seconds,
                         threshold=chosen.threshold, epoch=chosen.epoch + 1, fine_tuned_score=reached)
    _, records = strip_masks(vib_model, threshold=chosen.threshold, min_units=1, return_records=True)
    run.report.layers = [dataclasses.asdict(r) for r in records]
    small = run.check(result, small, original, score=reached, what="the best candidate, fine-tuned")
    return small, epochs_run.get(id(small), 0), result.kept


def trim(run, chosen, trial, target):
    """Try the chosen candidate with its LSTMs trimmed to a multiple of ``unit_multiple``.

    Returns ``(candidate, fine-tuned plain model, its score)`` when the trimmed model
    reaches ``target``, the chosen model's fine-tuned validation score (within the bound
    when that one is: a trim buys speed, not a loss of accuracy), else None; if a layer
    could be trimmed, ``report.trim`` says what was tried.
    """
    multiple = run.s["unit_multiple"]
    run.vib_model.set_weights(chosen.weights)
    dead, sizes = {}, {}
    for layer in run.vib_model.layers:
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
    mark_dead(run.vib_model, dead)
    weights = [w.copy() for w in run.vib_model.get_weights()]
    plain = strip_masks(run.vib_model, threshold=chosen.threshold, min_units=1, input_frames="all")
    masked = run.scorer.score_on(plain, run.data.val)
    tuned = trial(plain, target)
    accepted = run.scorer.meets(tuned, target)
    what = ", ".join(f"{name} {a} -> {b} units" for name, (a, b) in sizes.items())
    run.log(f"trimmed to a multiple of {multiple} ({what}): validation {run.scorer.describe(masked)} "
             f"before, {tuned:.4g} fine-tuned: "
             + ("accepted" if accepted else f"refused, target {run.scorer.describe(target)}"))
    candidate = Candidate(chosen.epoch, chosen.threshold, plain.count_params(), masked, weights, chosen.frames)
    run.report.candidates.append(candidate_row(candidate))
    run.report.trials.append((candidate.params, masked, tuned))
    run.report.trim = {"layers": {name: {"units": a, "trimmed_units": b} for name, (a, b) in sizes.items()},
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


def candidate_row(candidate):
    """A candidate as the report holds it: everything but its weights."""
    return {k: v for k, v in dataclasses.asdict(candidate).items() if k != "weights"}


def mark_dead(vib_model, zeroed):
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
