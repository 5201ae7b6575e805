"""CompressionReport: per-stage and per-layer figures of a compress() run."""

import dataclasses
import json

import numpy as np

from tf_vib._keras import keras
from tf_vib.report import format_table

__all__ = ["CompressionReport", "StageResult", "recurrent_params"]


def recurrent_params(model):
    """Parameters of the model's recurrent layers (LSTM, GRU, SimpleRNN, RNN, Bidirectional), nested included."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += recurrent_params(layer)
        elif isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
            total += layer.count_params()
    return total


def _accuracy(model, x, labels):
    predictions = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(predictions, axis=-1) == labels))


@dataclasses.dataclass
class StageResult:
    """One stage's model, measured: parameters, accuracy, wall time."""

    stage: str
    params: int
    recurrent_params: int
    val_accuracy: float
    test_accuracy: float | None
    seconds: float
    extra: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def measure(cls, stage, model, x_val, labels_val, test, seconds, **extra):
        return cls(
            stage=stage,
            params=int(model.count_params()),
            recurrent_params=int(recurrent_params(model)),
            val_accuracy=_accuracy(model, x_val, labels_val),
            test_accuracy=None if test is None else _accuracy(model, *test),
            seconds=float(seconds),
            extra=dict(extra),
        )

    def line(self):
        test = "" if self.test_accuracy is None else f", test accuracy {self.test_accuracy:.4f}"
        return (
            f"{self.stage}: {self.params:,} parameters ({self.recurrent_params:,} recurrent), "
            f"validation accuracy {self.val_accuracy:.4f}{test}, {self.seconds:.1f} s"
        )


@dataclasses.dataclass
class CompressionReport:
    """Figures of a ``compress`` run.

    Attributes:
      stages: ``StageResult`` per stage, the baseline first.
      layers: per-layer rows of the chosen stripping (units/inputs kept, parameters).
      candidates: every candidate model (epoch, threshold, params, masked validation accuracy),
        the trimmed one (see ``trim``) last.
      trials: ``(params, masked accuracy, fine-tuned accuracy)`` of the candidates fine-tuned
        while choosing, the trimmed one last.
      max_accuracy_drop: the accepted validation-accuracy loss the caller asked for.
      accuracy_floor: the validation accuracy a candidate had to reach: the original's minus
        ``max_accuracy_drop``, or minus one validation sample when that is coarser (a smaller
        drop cannot be measured on that validation set).
      trim: None, or the trim of the chosen LSTMs to a multiple of ``unit_multiple`` that
        compress() tried: ``{"layers": {name: {"units", "trimmed_units"}}, "params",
        "accuracy_before_tuning", "fine_tuned_accuracy", "target", "accepted"}`` (validation
        accuracies; accepted when the fine-tuned one reached the target).
    """

    max_accuracy_drop: float
    accuracy_floor: float | None = None
    stages: list = dataclasses.field(default_factory=list)
    layers: list = dataclasses.field(default_factory=list)
    candidates: list = dataclasses.field(default_factory=list)
    trials: list = dataclasses.field(default_factory=list)
    trim: dict | None = None

    @property
    def baseline(self):
        return self.stages[0]

    @property
    def final(self):
        return self.stages[-1]

    def to_dict(self):
        return {
            "max_accuracy_drop": self.max_accuracy_drop,
            "accuracy_floor": self.accuracy_floor,
            "stages": [dataclasses.asdict(s) for s in self.stages],
            "layers": self.layers,
            "candidates": [{k: v for k, v in c.items() if k != "weights"} for c in self.candidates],
            "trials": [
                {"params": p, "masked_accuracy": m, "fine_tuned_accuracy": a} for p, m, a in self.trials
            ],
            "trim": self.trim,
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

    def __str__(self):
        base = self.baseline
        rows = []
        for s in self.stages:
            rows.append((
                s.stage, f"{s.params:,}", f"{s.recurrent_params:,}",
                f"{base.recurrent_params / max(s.recurrent_params, 1):.1f}x",
                f"{100 * s.val_accuracy:.2f}",
                "-" if s.test_accuracy is None else f"{100 * s.test_accuracy:.2f}",
                f"{s.seconds:.1f}",
            ))
        stages = format_table(
            ("stage", "params", "recurrent params", "recurrent ratio", "val acc %", "test acc %", "seconds"),
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
        return f"{stages}\n\n{layers}"

    def plot(self, path, *, title=None):
        """Draw validation accuracy against parameters (threshold curve and stages) to a PNG."""
        from tf_vib._plots import figure

        with figure(path, xlabel="parameters (whole model)", ylabel="validation accuracy (%)",
                    title=title or "tf-vib: accuracy against size") as (_, ax):
            if self.candidates:
                ax.scatter([c["params"] for c in self.candidates],
                           [100 * c["masked_accuracy"] for c in self.candidates],
                           s=14, color="tab:blue", alpha=0.5, label="VIB candidates (masked)")
            if self.trials:
                ax.scatter([t[0] for t in self.trials], [100 * t[2] for t in self.trials], marker="x",
                           color="tab:orange", label="candidates, fine-tuned")
            for s in self.stages:
                ax.scatter([s.params], [100 * s.val_accuracy], s=60, zorder=3, label=s.stage)
            base = self.baseline
            ax.axhline(100 * (base.val_accuracy - self.max_accuracy_drop), color="grey", ls="--", lw=1,
                       label="accepted accuracy")
            ax.set_xscale("log")
        return path
