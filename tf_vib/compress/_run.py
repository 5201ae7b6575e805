"""One compress() call: the stages in order, their timing, the bound checks and the report."""

import dataclasses
import time
import warnings

from tf_vib import bridge
from tf_vib._keras import keras
from tf_vib.compress._candidates import fine_tune
from tf_vib.compress._defaults import DEFAULT_MAX_DROP, STATE_GATES
from tf_vib.compress._finetune import copy_model
from tf_vib.compress._pruning import cluster, magnitude_prune
from tf_vib.compress._report import CompressionReport, CompressionResult, StageResult
from tf_vib.compress._scorer import BoundNotMetWarning
from tf_vib.compress._stream import Stream, samples_of
from tf_vib.compress._vib_stage import train_and_choose
from tf_vib.lowrank import low_rank as factorise
from tf_vib.sizes import clustered_storage, gzip_size, nonzero_params
from tf_vib.surgery import take_kept_frames
from tf_vib.wrap import add_vib_masks, mask_plan

__all__ = ["Run", "RunSpec", "run_in_scope"]


class Run:
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
        self.checkpoints = None  # a `_resume.Checkpoints` with compress(checkpoint_dir=...)
        self.seed = 0  # compress()'s seed: the tfmot stages' shuffling of arrays

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
            n_val = samples_of(self.data.val)
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
        self.start("baseline", f"evaluating {self.model.name!r} on {samples_of(self.data.val)} validation samples")
        self.bound(self.record("baseline", self.model, self.seconds()).val_score)
        if not self.s["distillation"] and not self.classifier and self.s["verbose"]:
            self.log("not a classifier: fine-tuning on the model's own loss, without distillation")
        finetune_epochs = self.s["finetune_epochs"]
        small, tuned_epochs, chosen = copy_model(self.model), 0, False
        if self.vib_model is not None:
            small, tuned_epochs, chosen = train_and_choose(self, small)
        low_rank, previous = None, small
        if self.s["low_rank"] is not None:
            kernels = self.s["low_rank_kernels"]
            what = {"input": "input kernels", "recurrent": "recurrent kernels", "both": "input and recurrent kernels"}
            self.start("low_rank", f"SVD factorisation of the recurrent layers' {what[kernels]} ({self.s['low_rank']})")
            key = "rank" if isinstance(self.s["low_rank"], int) else "energy"
            small, info = factorise(small, kernels=kernels, **{key: self.s["low_rank"]})
            low_rank = self.record("low_rank", small, self.seconds(),
                                   ranks={name: i.rank for name, i in info.items() if i.factorised})
        if self.finetunes and (chosen or low_rank is not None):  # the fine-tune is the last step of those stages
            self.start("finetune", f"fine-tuning the plain model for {finetune_epochs - tuned_epochs} epochs")
            if low_rank is None:  # fine_tune works in place
                previous = copy_model(small)
            backup = ([] if self.checkpoints is None else
                      self.checkpoints.finetune_callbacks(finetune_epochs - tuned_epochs))
            history, _ = self.tune(small, finetune_epochs - tuned_epochs, verbose=self.s["verbose"],
                                   callbacks=backup)
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

        batch, train, val = self.s["batch_size"], self.data.train, self.data.val
        if isinstance(train, Stream):  # streamed as it is batched (shuffled, if at all, by the user)
            train = train.dataset
        else:  # reshuffled every epoch, as Keras's fit shuffles arrays in the other stages
            train = tf.data.Dataset.from_tensor_slices(train).shuffle(samples_of(train), seed=self.seed).batch(batch)
        val = val.dataset if isinstance(val, Stream) else tf.data.Dataset.from_tensor_slices(val).batch(256)
        return train, val


def _sizes(model):
    weights = model.get_weights()
    return {"nonzero_params": int(nonzero_params(model)), "gzip_bytes_float32": int(gzip_size(weights))}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What one compress() run is, once its arguments are checked: the model (tf_keras) and
    the user's (to give the result back in their Keras), the prepared data, the loss, the
    checked ``settings``, the keep thresholds, the VIB options and the seed."""

    model: object
    user_model: object
    data: object
    loss: object
    settings: dict
    thresholds: tuple
    vib: bool
    scorer: object
    classifier: bool
    kl_mults: tuple  # (input, hidden, dense)
    masked_gates: object
    seed: int
    frame_masks: bool
    distributed: bool
    checkpoints: object = None  # a `_resume.Checkpoints`, with checkpoint_dir
    notes: tuple = ()  # warnings about the settings, for the report


def run_in_scope(spec):
    """One compress() run from its `RunSpec`, inside the strategy's scope: the VIB copy, the
    stages (`Run`), the kept frames, and the result in the user's Keras."""
    model, settings, vib = spec.model, spec.settings, spec.vib
    if spec.distributed:  # the teacher and every copy hold variables of the strategy (mirrored)
        model = copy_model(model)
        model.compile(loss=spec.loss)
    structured = vib or settings["iss"] is not None
    vib_model = None
    if structured:
        input_kl_mult, hidden_kl_mult, dense_kl_mult = spec.kl_mults
        vib_model = add_vib_masks(
            model, kl_factor=settings["kl_factor"] if vib else 0.0, input_kl_mult=input_kl_mult,
            hidden_kl_mult=hidden_kl_mult, dense_kl_mult=dense_kl_mult,
            masked_gates=STATE_GATES if spec.masked_gates is None or not vib else spec.masked_gates,
            feature_masks=vib, dense_masks=vib, frame_masks=spec.frame_masks,
        )
    keras.utils.set_random_seed(spec.seed)
    run = Run(model, vib_model, spec.data, spec.loss, settings, spec.thresholds, vib, spec.scorer,
              spec.classifier)
    run.checkpoints, run.seed = spec.checkpoints, spec.seed
    run.report.notes = list(spec.notes)
    if structured:
        plan = mask_plan(model, feature_masks=vib, dense_masks=vib)
        run.report.masks = [dataclasses.asdict(d) for d in plan.decisions]
    result = run.run()
    if spec.frame_masks:  # the stages ran on T-frame clips; the result takes the kept frames only
        small, result.report.frames = take_kept_frames(result.model)
        if result.report.frames is not None:
            small.compile(optimizer=keras.optimizers.Adam(settings["finetune_learning_rate"]), loss=spec.loss,
                          metrics=[run.scorer.metric()])
            result.model = small
    if bridge.is_keras3(spec.user_model):  # in the user's Keras; vib_model stays tf_keras (its VIB layers)
        result.model = bridge.compiled_like(bridge.to_keras3(result.model), spec.user_model)
    return result
