"""The methods the benchmark compares, each with its sweep, its budget and how one point runs.

Every method but ``vib`` (compress()'s defaults) and the two combinations with it sweeps
its setting; the best point is chosen on validation data (`tf_vib.bench.choice`). The
rivals get compress()'s ``on_miss="best"``, so that a point that misses the bound comes back
(labelled) rather than as the baseline's copy, and shows where that rival stands.
"""

import dataclasses
import inspect
import time
import warnings

__all__ = ["METHODS", "SWEEPS", "REFERENCE", "FLOOR", "WIDTHS", "budget", "points", "run_point"]

REFERENCE = "baseline + fine-tune"
#: The scratch model that gives the latency floor: the width search's LSTM(8).
FLOOR = "lstm8 (scratch)"
ISS_STRENGTHS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)
#: Ranks of the LSTM's input and recurrent kernels (each clipped to its full rank, and left
#: whole where its factors would not be smaller: the input kernel of 8-12 features from 12).
LOW_RANKS = (1, 2, 4, 8, 16, 32, 64)
WIDTHS = (4, 6, 8, 12, 16, 24, 32, 48, 64)
QUICK_WIDTHS = (4, 8)
#: A rank no kernel reaches: compress() leaves the model whole and fine-tunes it, exactly as
#: every method's model is fine-tuned (same epochs, rate and distillation).
_WHOLE = 10**9
_RIVAL = {"vib": False, "on_miss": "best"}

#: method -> [(point label, settings)]: ``compress`` keyword arguments, or ``{"units": u}``
#: (an LSTM(u) from scratch) for the width searches.
SWEEPS = {
    REFERENCE: [("whole", {**_RIVAL, "low_rank": _WHOLE})],
    "vib": [("defaults", {})],
    "vib+iss": [("iss 0.001", {"iss": 1e-3})],
    "vib+magnitude+cluster": [("sparsity 0.5, 16 clusters", {"magnitude_sparsity": 0.5, "clusters": 16})],
    "iss": [(f"strength {s:g}", {**_RIVAL, "iss": s}) for s in ISS_STRENGTHS],
    "magnitude": [(f"sparsity {s:g}", {**_RIVAL, "magnitude_sparsity": s}) for s in SPARSITIES],
    "low-rank": [(f"rank {r}", {**_RIVAL, "low_rank": r, "low_rank_kernels": "both"}) for r in LOW_RANKS],
    "width (scratch)": [(f"LSTM({u})", {"units": u}) for u in WIDTHS],
    "width (scratch + distill)": [(f"LSTM({u})", {"units": u, "distill": True}) for u in WIDTHS],
}
METHODS = tuple(SWEEPS)


def budget(quick=False):
    """The training budget every method shares: compress()'s defaults, or a tiny one.

    ``scratch_epochs`` (width searches) and ``magnitude_epochs`` are compress()'s VIB plus
    fine-tuning epochs: what tf-vib's default run trains. The baseline trains until its
    validation accuracy stops improving for ``patience`` epochs (best epoch restored).
    """
    from tf_vib import compress

    defaults = {k: p.default for k, p in inspect.signature(compress).parameters.items()}
    epochs, finetune = (1, 1) if quick else (defaults["epochs"], defaults["finetune_epochs"])
    return {"baseline_units": 128, "baseline_max_epochs": 2 if quick else 500, "patience": 1 if quick else 30,
            "epochs": epochs, "finetune_epochs": finetune, "magnitude_epochs": epochs + finetune,
            "scratch_epochs": epochs + finetune,
            # Quick: fewer candidates and no trim trial (each costs a fine-tune and graph tracing).
            "compress": {"thresholds": [0.0, 3.0], "unit_multiple": 1} if quick else {},
            "distillation": {"alpha": defaults["distill_alpha"], "beta": 1.0 - defaults["distill_alpha"],
                             "temperature": defaults["distill_temperature"]}}


def points(method, quick=False):
    """The sweep of ``method``: all of it, or in quick mode its first and last points."""
    sweep = SWEEPS[method]
    if quick and method.startswith("width"):
        return [p for p in sweep if p[1]["units"] in QUICK_WIDTHS]
    return sweep if not quick or len(sweep) < 3 else [sweep[0], sweep[-1]]


def run_point(settings, context, plan):
    """Train one sweep point: ``(model, record extras)``.

    Args:
      settings: the point's settings (`SWEEPS`).
      context: ``{"data", "train", "val", "test", "baseline", "seed"}``.
      plan: `budget`.
    """
    if "units" in settings:
        from tf_vib.bench.common import scratch

        teacher = context["baseline"] if settings.get("distill") else None
        model, info = scratch(context["data"], context["train"], context["val"], units=settings["units"],
                              epochs=plan["scratch_epochs"], seed=context["seed"], teacher=teacher,
                              distillation=plan["distillation"])
        return model, info
    from tf_vib import BoundNotMetWarning, compress

    epochs = {"epochs": plan["epochs"], "finetune_epochs": plan["finetune_epochs"], **plan["compress"]}
    if "magnitude_sparsity" in settings and settings.get("vib") is False:
        epochs["finetune_epochs"] = plan["magnitude_epochs"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BoundNotMetWarning)  # the report records the misses
        result = compress(context["baseline"], context["train"], validation_data=context["val"],
                          test_data=context["test"], seed=context["seed"], verbose=0, **epochs, **settings)
    report = result.report
    return result.model, {
        "threshold": result.threshold, "layers": report.layers, "trim": report.trim,
        "stages": [dataclasses.asdict(s) for s in report.stages],
        "compress_bound_met": report.bound_met, "misses": report.misses, "bound_drop": report.max_metric_drop,
    }


def timed(function, *args):
    """``(function(*args), seconds)``."""
    started = time.perf_counter()
    return function(*args), time.perf_counter() - started
