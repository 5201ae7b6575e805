"""The per-run JSON that ``tf-vib bench`` saves, loaded and aggregated over seeds; the targets."""

import json
import pathlib

import numpy as np

__all__ = ["load_results", "load_curves", "aggregate", "sweep_points", "check_targets", "further_checks"]

FLOOR = "lstm8 (scratch)"
TARGET_RATIOS = {"JapaneseVowels": 50.0, "digits_rows": 15.0}
MAX_DROP_POINTS = 0.5
MAX_EPOCH_RATIO = 1.5
#: Data sets whose compressed float32 file has a latency target: within 1.2x of an LSTM(8)
#: over the same steps (issue 5 sets it on JapaneseVowels, from float32 timings).
FLOOR_TARGETS = ("JapaneseVowels",)
PAPER = "paper_size"
CURVE_SUFFIX = "_latency_curve.json"


def load_results(folder):
    """``({dataset: [seed record, ...]}, {dataset: epoch-time record})`` from a results folder."""
    runs, timing = {}, {}
    for path in sorted(pathlib.Path(folder).glob("*.json")):
        record = json.loads(path.read_text())
        if path.name.endswith("_epoch_time.json"):
            timing[path.name[: -len("_epoch_time.json")]] = record
        elif path.name.endswith(CURVE_SUFFIX):
            continue  # see load_curves
        else:
            runs.setdefault(record["dataset"], []).append(record)
    return runs, timing


def load_curves(folder):
    """``{dataset: latency_curve record}`` (``tf_vib.bench.runner.latency_curve``) from a results folder."""
    return {path.name[: -len(CURVE_SUFFIX)]: json.loads(path.read_text())
            for path in sorted(pathlib.Path(folder).glob(f"*{CURVE_SUFFIX}"))}


def _stat(values):
    values = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return (float(values.mean()), float(values.std())) if len(values) else (float("nan"), float("nan"))


def aggregate(records):
    """Per method: means and spreads over seeds, with ratios to that seed's own baseline."""
    methods = list(records[0]["runs"])
    table = {}
    for method in methods:
        chosen = [r for r in records if method in r["runs"]]
        rows = [(r["runs"]["baseline"], r["runs"][method]) for r in chosen]
        references = [r["runs"][r.get("reference", "baseline")] for r in chosen]
        entry = {"seeds": len(rows)}
        for key in ("params", "lstm_params", "lstm_nonzero", "keras_accuracy", "val_accuracy", "seconds"):
            entry[key] = _stat([m.get(key) for _, m in rows])
        entry["lstm_ratio"] = _stat([b["lstm_params"] / max(m["lstm_params"], 1) for b, m in rows])
        entry["nonzero_ratio"] = _stat([b["lstm_nonzero"] / max(m["lstm_nonzero"], 1) for b, m in rows])
        entry["drop_points"] = _stat([100 * (ref["keras_accuracy"] - m["keras_accuracy"])
                                      for ref, (_, m) in zip(references, rows, strict=True)])
        # What finding the setting cost: the whole sweep's wall time (one run where no sweep).
        entry["sweep_seconds"] = _stat([sum(p["seconds"] for p in r.get("sweeps", {}).get(method, [])
                                            ) or r["runs"][method]["seconds"] for r in chosen])
        entry["bound_met"] = [m.get("bound_met") for _, m in rows]
        entry["points"] = list(dict.fromkeys(m["point"] for _, m in rows if m.get("point")))
        entry["commits"] = sorted({m.get("stamp", {}).get("commit", "?") for _, m in rows})
        files = {}
        for mode in rows[0][1].get("files", {}):
            pairs = [(b["files"][mode], m["files"][mode], b["files"]["float32"]) for b, m in rows]
            files[mode] = {
                "bytes": _stat([m["bytes"] for _, m, _ in pairs]),
                "gzip_bytes": _stat([m["gzip_bytes"] for _, m, _ in pairs]),
                "tflite_accuracy": _stat([m["tflite_accuracy"] for _, m, _ in pairs]),
                "speedup": _stat([b["latency_us"] / m["latency_us"] for b, m, _ in pairs]),
                "latency_us": _stat([m["latency_us"] for _, m, _ in pairs]),
                "smaller_than_float32_baseline": _stat([f["bytes"] / m["bytes"] for _, m, f in pairs]),
                "verified": all(m["verified"] for _, m, _ in pairs),
                "failed": sum(not m["verified"] for _, m, _ in pairs),
            }
        entry["files"] = files
        kept = [_input_share(m) for _, m in rows]
        entry["inputs_kept"] = _stat(kept) if all(k is not None for k in kept) else None
        table[method] = entry
    return table


def sweep_points(records):
    """Per method, per sweep point: sizes and accuracies over seeds, and in how many seeds the
    point met the bound (``met``) of ``seeds``."""
    table = {}
    for method in records[0].get("sweeps", {}):
        labels = [p["point"] for p in records[0]["sweeps"][method]]
        entries = []
        for label in labels:
            found = [p for r in records for p in r.get("sweeps", {}).get(method, []) if p["point"] == label]
            entry = {"point": label, "seeds": len(found), "met": sum(bool(p["met"]) for p in found)}
            for key in ("lstm_params", "lstm_nonzero", "val_accuracy", "keras_accuracy", "seconds"):
                entry[key] = _stat([p[key] for p in found])
            entries.append(entry)
        table[method] = entries
    return table


def _input_share(run):
    masks = [layer for layer in run.get("layers", []) if layer["kind"] == "FeatureMask"]
    if not masks:
        return None
    return sum(m["inputs_kept"] for m in masks) / sum(m["inputs_total"] for m in masks)


def _floor_ratio(records, method, mode):
    """Latency of ``method`` over that of the LSTM(8) floor, per seed: ``(mean, std)`` or None."""
    values = [r["runs"][method]["files"][mode]["latency_us"] / r["runs"][FLOOR]["files"][mode]["latency_us"]
              for r in records if method in r["runs"] and FLOOR in r["runs"]
              and mode in r["runs"][method].get("files", {}) and mode in r["runs"][FLOOR].get("files", {})]
    return _stat(values) if values else None


def check_targets(runs, timing=None):
    """``[(target, measured, met)]`` for the targets the issues set (``timing``: per data set,
    the ``vib_epoch_time`` figures)."""
    checks = []
    for dataset, records in runs.items():
        table = aggregate(records)
        vib = table.get("vib")
        if vib is None:
            continue
        if dataset == PAPER:
            ratio, drop = vib["lstm_ratio"][0], vib["drop_points"][0]
            speed = vib["files"]["float32"]["speedup"][0]
            checks.append(("paper-sized: >= 1000x fewer LSTM parameters, accuracy within 1 point",
                           f"{ratio:,.0f}x, drop {drop:+.2f} points", ratio >= 1000 and drop <= 1.0))
            checks.append(("paper-sized: >= 100x lower latency (float32 files)", f"{speed:,.0f}x", speed >= 100))
            continue
        if dataset in TARGET_RATIOS:
            want = TARGET_RATIOS[dataset]
            ratio, drop = vib["lstm_ratio"][0], vib["drop_points"][0]
            checks.append((f"{dataset}: >= {want:g}x fewer LSTM parameters at <= {MAX_DROP_POINTS} point mean drop",
                           f"{ratio:.1f}x, mean drop {drop:+.2f} points",
                           ratio >= want and drop <= MAX_DROP_POINTS))
        int8 = vib["files"].get("int8")
        if int8:
            smaller = int8["smaller_than_float32_baseline"][0]
            checks.append((f"{dataset}: compressed int8 file >= 30x smaller than the baseline float32 file",
                           f"{smaller:.1f}x", smaller >= 30))
        if dataset in FLOOR_TARGETS:
            checks += _floor_check(dataset, records, "float32")
    checks += [(f"{d}: a VIB training epoch <= {MAX_EPOCH_RATIO:g}x a plain LSTM epoch", f"{t['ratio']:.2f}x",
                t["ratio"] <= MAX_EPOCH_RATIO) for d, t in (timing or {}).items()]
    return checks


def further_checks(runs):
    """``[(check, measured, met)]``: the 1.2x latency floor where the issues set no target
    (int8 files everywhere, float32 on the data sets not in `FLOOR_TARGETS`)."""
    checks = []
    for dataset, records in runs.items():
        if dataset == PAPER:
            continue
        for mode in ("float32", "int8"):
            if mode == "int8" or dataset not in FLOOR_TARGETS:
                checks += _floor_check(dataset, records, mode)
    return checks


def _floor_check(dataset, records, mode, ratio=1.2):
    """``[(check, measured, met)]`` for the compressed ``mode`` files against the LSTM(8)
    floor, or ``[]`` when the records hold no floor."""
    floor = _floor_ratio(records, "vib", mode)
    if floor is None:
        return []
    return [(f"{dataset}: compressed {mode} latency within {ratio:g}x of the LSTM(8) floor",
             f"{floor[0]:.2f}x the floor", floor[0] <= ratio)]
