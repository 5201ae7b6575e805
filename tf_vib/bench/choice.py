"""Every choice the benchmark makes, from validation figures alone: a pure function of the JSON.

The reference is whichever of the baseline and the baseline fine-tuned like every method
(`tf_vib.bench.methods.REFERENCE`) is better on validation data; the bound is its validation
accuracy minus compress()'s tolerance on that split (``report.max_metric_drop``: 0.5 point,
never finer than one validation sample). Per method, the chosen point is the smallest (in
nonzero LSTM parameters) that meets the bound, or, when none does, the best on validation,
marked as missing it.
"""

__all__ = ["choose_reference", "choose_point", "choose_all"]

BASELINE = "baseline"


def choose_reference(baseline, finetuned):
    """``"baseline"`` or the fine-tuned reference's name, whichever validates better (ties:
    the baseline); ``finetuned`` is ``(name, record)`` or None."""
    if finetuned is None or finetuned[1]["val_accuracy"] <= baseline["val_accuracy"]:
        return BASELINE
    return finetuned[0]


def choose_point(sweep, floor):
    """``(index, met)``: the smallest point of ``sweep`` (records) with a validation accuracy
    of at least ``floor`` (ties: the better one on validation, then the earlier), or the best
    on validation (ties: the smaller) with ``met`` False."""
    met = [i for i, r in enumerate(sweep) if r["val_accuracy"] >= floor - 1e-12]
    if met:
        return min(met, key=lambda i: (sweep[i]["lstm_nonzero"], -sweep[i]["val_accuracy"], i)), True
    return min(range(len(sweep)), key=lambda i: (-sweep[i]["val_accuracy"], sweep[i]["lstm_nonzero"], i)), False


def choose_all(baseline, sweeps, bound_drop, reference_method):
    """``{"reference", "floor", "chosen": {method: {"index", "met"}}}`` for one (data set, seed).

    Args:
      baseline: the baseline's record.
      sweeps: ``{method: [point record, ...]}``.
      bound_drop: the tolerance (accuracy fraction) below the reference's validation accuracy.
      reference_method: the name of the fine-tuned reference in ``sweeps``.
    """
    finetuned = sweeps.get(reference_method)
    reference = choose_reference(baseline, (reference_method, finetuned[0]) if finetuned else None)
    reference_val = (baseline if reference == BASELINE else finetuned[0])["val_accuracy"]
    floor = reference_val - bound_drop
    chosen = {}
    for method, sweep in sweeps.items():
        index, met = choose_point(sweep, floor)
        chosen[method] = {"index": index, "met": met}
    return {"reference": reference, "floor": floor, "chosen": chosen}
