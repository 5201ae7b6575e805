"""CompressionReport: per-stage and per-layer figures of a compress() run."""

import dataclasses
import functools
import json

from tf_vib._keras import keras
from tf_vib.compress._scorer import ACCURACY
from tf_vib.compress._summary import format_table

__all__ = ["CompressionReport", "CompressionResult", "StageResult", "recurrent_params"]


def recurrent_params(model):
    """Parameters of the model's recurrent layers (LSTM, GRU, SimpleRNN, RNN, Bidirectional), nested included."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += recurrent_params(layer)
        elif isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
            total += layer.count_params()
    return total


def _value(metric, value):
    return f"{value:.4f}" if metric == "accuracy" else f"{value:.4g}"


@dataclasses.dataclass
class StageResult:
    """One stage's model, measured: parameters, validation (and test) scores, wall time.

    ``val_score``/``test_score`` are in the run's ``metric``; ``val_accuracy``/``test_accuracy``
    are the accuracies of a classifier (None otherwise). ``bound_met`` says whether the model
    the stage hands on met the bound (None: not checked; for the vib/iss stage, the chosen
    candidate after its trial fine-tune, ``extra["fine_tuned_score"]``); ``kept`` is False
    for a refused stage, whose model went no further.
    """

    stage: str
    params: int
    recurrent_params: int
    val_accuracy: float | None
    test_accuracy: float | None
    seconds: float
    extra: dict = dataclasses.field(default_factory=dict)
    metric: str = "accuracy"
    val_score: float | None = None
    test_score: float | None = None
    bound_met: bool | None = None
    kept: bool = True

    @classmethod
    def measure(cls, stage, model, scorer, val, test, seconds, *, classifier=True, **extra):
        """Measure ``model`` with ``scorer`` on ``val`` and ``test`` ((x, y) pairs or None)."""
        scores = [None if data is None else scorer.score_on(model, data) for data in (val, test)]
        accuracies = scores if scorer.is_accuracy else [
            None if data is None or not classifier else ACCURACY.score_on(model, data) for data in (val, test)]
        return cls(
            stage=stage,
            params=int(model.count_params()),
            recurrent_params=int(recurrent_params(model)),
            val_accuracy=accuracies[0],
            test_accuracy=accuracies[1],
            seconds=float(seconds),
            extra=dict(extra),
            metric=scorer.name,
            val_score=scores[0],
            test_score=scores[1],
        )

    def line(self):
        test = "" if self.test_score is None else f", test {self.metric} {_value(self.metric, self.test_score)}"
        return (
            f"{self.stage}: {self.params:,} parameters ({self.recurrent_params:,} recurrent), "
            f"validation {self.metric} {_value(self.metric, self.val_score)}{test}, {self.seconds:.1f} s"
        )


@dataclasses.dataclass
class CompressionReport:
    """Figures of a ``compress`` run. ``str()`` is a table whose "bound" column says whether
    each stage's model met the bound ("(tuned)": the chosen candidate after its trial
    fine-tune, where the row shows it stripped, before), then the bound and the misses.

    Scores are in the run's ``metric`` (accuracy for classifiers unless told otherwise); the
    keys that say "accuracy" below hold that metric's values.

    Attributes:
      stages: ``StageResult`` per stage, the baseline first, refused stages included
        (``kept`` False).
      layers: per-layer rows of the chosen stripping (units/inputs kept, parameters).
      candidates: every candidate model (epoch, threshold, params, masked validation score),
        the trimmed one (see ``trim``) last.
      trials: ``(params, masked score, fine-tuned score)`` of the candidates fine-tuned
        while choosing, the trimmed one last.
      max_accuracy_drop: the accepted validation-accuracy loss the caller asked for (None
        when the metric is not accuracy).
      accuracy_floor: the validation accuracy a candidate had to reach: the original's minus
        ``max_accuracy_drop``, or minus one validation sample when that is coarser (a smaller
        drop cannot be measured on that validation set); None when the metric is not accuracy.
      trim: None, or the trim of the chosen LSTMs to a multiple of ``unit_multiple`` that
        compress() tried: ``{"layers": {name: {"units", "trimmed_units"}}, "params",
        "accuracy_before_tuning", "fine_tuned_accuracy", "target", "accepted"}`` (validation
        scores; accepted when the fine-tuned one reached the target).
      metric, higher_is_better: the validation metric every choice was made on.
      max_metric_drop: the tolerance used, in the metric's units (for accuracy, after the
        one-sample coarsening).
      bound: the accepted validation score: the baseline's minus ``max_metric_drop`` (plus,
        when lower is better).
      bound_met: whether the returned model meets ``bound`` (False only with
        ``on_miss="best"``: a copy of the original meets it).
      misses: ``{"stage", "what", "params", "val_score", "kept"}`` per stage whose model missed the
        bound: refused (``kept`` False: the next stage started from the previous model) or,
        with ``on_miss="best"``, kept.
      on_miss: compress()'s ``on_miss``.
      masks: what ``tf_vib.wrap.mask_plan`` decided before training, per layer:
        ``{"name", "type", "masks", "reason"}`` (``reason`` says why a layer's units keep
        their width).
      frames: with ``compress(frame_masks=True)``: ``{"kept": [positions], "of": T}``, the
        frames the returned model takes (None: every frame).
      notes: warnings about the settings compress() was given, one sentence each (a KL
        warm-up as long as the VIB training, say); ``str()`` ends with them.
    """

    max_accuracy_drop: float | None
    accuracy_floor: float | None = None
    stages: list = dataclasses.field(default_factory=list)
    layers: list = dataclasses.field(default_factory=list)
    candidates: list = dataclasses.field(default_factory=list)
    trials: list = dataclasses.field(default_factory=list)
    trim: dict | None = None
    metric: str = "accuracy"
    higher_is_better: bool = True
    max_metric_drop: float | None = None
    bound: float | None = None
    bound_met: bool = True
    misses: list = dataclasses.field(default_factory=list)
    on_miss: str = "original"
    masks: list = dataclasses.field(default_factory=list)
    frames: dict | None = None
    notes: list = dataclasses.field(default_factory=list)

    @property
    def baseline(self):
        return self.stages[0]

    @property
    def final(self):
        """The stage whose model compress() returned: the last one kept (the baseline, copied,
        when every stage was refused)."""
        return [s for s in self.stages if s.kept][-1]

    def to_dict(self):
        return {
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "max_accuracy_drop": self.max_accuracy_drop,
            "accuracy_floor": self.accuracy_floor,
            "max_metric_drop": self.max_metric_drop,
            "bound": self.bound,
            "bound_met": self.bound_met,
            "on_miss": self.on_miss,
            "misses": self.misses,
            "stages": [dataclasses.asdict(s) for s in self.stages],
            "layers": self.layers,
            "candidates": [{k: v for k, v in c.items() if k != "weights"} for c in self.candidates],
            "trials": [
                {"params": p, "masked_accuracy": m, "fine_tuned_accuracy": a} for p, m, a in self.trials
            ],
            "trim": self.trim,
            "masks": self.masks,
            "frames": self.frames,
            "notes": self.notes,
            "compression": {
                "params": self.baseline.params / max(self.final.params, 1),
                "recurrent_params": self.baseline.recurrent_params / max(self.final.recurrent_params, 1),
            },
        }

    def to_json(self, path=None, **kwargs):
        text = json.dumps(self.to_dict(), indent=2, **kwargs)
        if path is not None:
            with open(path, "w") as handle:
                handle.write(text + "\n")
        return text

    def bound_lines(self):
        """What the bound was and which stages missed it, one sentence a line."""
        if self.bound is None:
            return []
        sign, side = (">=", "-") if self.higher_is_better else ("<=", "+")
        value = functools.partial(_value, self.metric)
        lines = [f"Bound: validation {self.metric} {sign} {value(self.bound)} (the baseline's "
                 f"{value(self.baseline.val_score)} {side} {value(self.max_metric_drop)})."]
        for miss in self.misses:
            lines.append(
                f"{miss['stage']}: {miss['what']}, {miss['params']:,} parameters, reached validation "
                f"{self.metric} {value(miss['val_score'])}, missing the bound: "
                + ("kept (on_miss='best')." if miss["kept"] else "refused.")
            )
        if not self.bound_met:
            lines.append("The returned model misses the bound.")
        elif self.misses and self.final is self.baseline:
            lines.append("No compressed model met the bound: compress() returned a copy of the original "
                         "model (on_miss='best' returns the best candidate instead).")
        elif self.misses:
            lines.append(f"The returned model is the {self.final.stage} stage's, which met the bound.")
        return lines

    def __str__(self):
        base = self.baseline
        accuracy = self.metric == "accuracy"

        def score(value):
            return "-" if value is None else f"{100 * value:.2f}" if accuracy else f"{value:.4g}"

        rows = []
        for s in self.stages:
            rows.append((
                s.stage + ("" if s.kept else " (refused)"), f"{s.params:,}", f"{s.recurrent_params:,}",
                f"{base.recurrent_params / max(s.recurrent_params, 1):.1f}x",
                score(s.val_score), score(s.test_score),
                {None: "", True: "met", False: "missed"}[s.bound_met]
                + (" (tuned)" if s.bound_met is not None and "fine_tuned_score" in s.extra else ""),
                f"{s.seconds:.1f}",
            ))
        name = "acc %" if accuracy else self.metric
        stages = format_table(
            ("stage", "params", "recurrent params", "recurrent ratio", f"val {name}", f"test {name}",
             "bound", "seconds"),
            rows,
        )
        layer_rows = [
            (r["name"], r["kind"],
             "" if r["units_total"] is None else f"{r['units_kept']}/{r['units_total']}",
             "" if r["inputs_total"] is None else f"{r['inputs_kept']}/{r['inputs_total']}",
             r["params_before"], r["params_after"])
            for r in self.layers
        ]
        layers = format_table(("layer", "kind", "units kept", "inputs kept", "params before", "params after"), layer_rows)
        kept = [f"{m['name']} ({m['type']}): {m['reason']}" for m in self.masks if m["reason"]]
        if self.frames is not None:
            kept.append(f"frames kept: {len(self.frames['kept'])}/{self.frames['of']} (positions "
                        f"{self.frames['kept']}): the model takes these frames only")
        notes = [f"Note: {note}" for note in self.notes]
        return "\n\n".join([stages, "\n".join(self.bound_lines()), layers, "\n".join(kept),
                             "\n".join(notes)]).rstrip()

    def plot(self, path, *, title=None):
        """Draw the validation score against parameters (threshold curve and stages) to a PNG."""
        from tf_vib._plots import figure

        scale = 100 if self.metric == "accuracy" else 1
        label = "accuracy (%)" if scale == 100 else self.metric
        with figure(path, xlabel="parameters (whole model)", ylabel=f"validation {label}",
                    title=title or f"tf-vib: {self.metric} against size") as (_, ax):
            if self.candidates:
                ax.scatter([c["params"] for c in self.candidates],
                           [scale * c["masked_accuracy"] for c in self.candidates],
                           s=14, color="tab:blue", alpha=0.5, label="VIB candidates (masked)")
            if self.trials:
                ax.scatter([t[0] for t in self.trials], [scale * t[2] for t in self.trials], marker="x",
                           color="tab:orange", label="candidates, fine-tuned")
            for s in self.stages:
                ax.scatter([s.params], [scale * s.val_score], s=60, zorder=3, label=s.stage)
            if self.bound is not None:
                ax.axhline(scale * self.bound, color="grey", ls="--", lw=1, label="bound")
            ax.set_xscale("log")
        return path


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
