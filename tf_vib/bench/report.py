"""``docs/benchmarks.md`` and its plots, from the per-run JSON that ``tf-vib bench`` saves."""

import pathlib

from tf_vib.bench.aggregate import (
    PAPER,
    aggregate,
    check_targets,
    further_checks,
    load_curves,
    load_results,
    sweep_points,
)
from tf_vib.bench.data import HELD_OUT, MAX_STEPS, RESERVED, TUNING
from tf_vib.bench.floor import floor_lines, plot_curves
from tf_vib.bench.sweeps import method_table, plot_pareto, sweep_table
from tf_vib.compress._summary import format_table

__all__ = ["write_report"]


def _single_points(table):
    """Each method's one model as its sweep, for records without sweeps (the paper-sized run)."""
    return {method: [{"point": "-", "seeds": e["seeds"], "met": e["seeds"], **e}]
            for method, e in table.items() if method != "baseline"}


def _kb(files, mode, key="bytes"):
    return "-" if mode not in files else f"{files[mode][key][0] / 1024:,.1f}"


def _speed(files, mode):
    return "-" if mode not in files else f"{files[mode]['speedup'][0]:.2f}x"


def _verified(files, seeds):
    """'yes', or which modes missed their verification target in how many seeds."""
    missed = [f"{mode} {v.get('failed', 1)}/{seeds}" for mode, v in files.items() if not v["verified"]]
    return "yes" if not missed else "missed: " + ", ".join(missed)


def _file_table(table):
    rows = []
    for method, e in table.items():
        f = e["files"]
        rows.append((method, _kb(f, "float32"), _kb(f, "float32", "gzip_bytes"), _kb(f, "dynamic"),
                     _kb(f, "float16"), _kb(f, "int8"), _kb(f, "int8", "gzip_bytes"),
                     "-" if "int8" not in f else f"{f['int8']['smaller_than_float32_baseline'][0]:.1f}x",
                     _speed(f, "float32"), _speed(f, "dynamic"), _speed(f, "int8"),
                     _verified(f, e["seeds"])))
    return format_table(("method", "float32 KB", "float32 gzip KB", "dynamic KB", "float16 KB", "int8 KB",
                         "int8 gzip KB", "int8 vs baseline float32", "speed-up float32", "speed-up dynamic",
                         "speed-up int8", "verified"), rows)


def _paper_text(record):
    e = record.get("encoder", {})
    return [
        "The setting of the paper's CNN-LSTM: an `LSTM(2048) -> Dense` on 2048-d per-frame CNN",
        "features of 8-frame clips (33.6M LSTM parameters). ImageNet weights are not available",
        "offline, random Inception-v3 features barely separate the motions (a linear probe",
        "reached 46-67% on 7 classes) and training the CNN end to end inside a small CNN-LSTM",
        "reached 41% in 25 epochs, so the frame encoder was pretrained on what a frame shows:",
        f"`keras.applications.InceptionV3` (random initialisation, {e.get('size', '?')}x{e.get('size', '?')}",
        "input, average pooling: 2048 features) with a linear head regressing the moving shape's",
        f"position, size and angle in {e.get('pretraining_frames', '?')} single frames rendered for it alone",
        f"(none from the action clips; {e.get('encoder_epochs', '?')} epochs; held-out MSE",
        f"{e.get('encoder_val_mse', float('nan')):.4f} against a target variance of",
        f"{e.get('state_variance', float('nan')):.4f}), then frozen. Its features, standardised with training",
        "statistics, feed the baseline. Clips: 7 motions x "
        f"{e.get('clips_per_class', '?')}, {e.get('frames', '?')} frames of {e.get('size', '?')}x{e.get('size', '?')}",
        "pixels. One seed. [paper_size.md](paper_size.md) says what it took to get there.",
        "",
    ]

def _shown(path):
    """``path`` relative to the working directory when it lies below it."""
    path = pathlib.Path(path).resolve()
    try:
        return str(path.relative_to(pathlib.Path.cwd()))
    except ValueError:
        return str(path)


def _timing_text(runs):
    """How the files were timed, naming the data sets timed the earlier way."""
    older = sorted(d for d, records in runs.items() if any("latency_timing" not in r for r in records))
    text = ("Files are timed interleaved sample by sample (`converters.compare_latency`: for each "
            "sample, every file in a shuffled order runs one untimed and 5 timed invokes; 3 rounds), "
            "so that a drift of the machine's speed, which on this 2-core VM reached 1.7x within a "
            "second, falls on all files alike.")
    if older:
        text += (f" {', '.join(older)}: timed before that change, file after file in 3 rounds of "
                 "30 samples x 5 invokes, so a drift could fall on some files and not others.")
    return [text]


def write_report(results, docs, *, command):
    """Write ``docs/benchmarks.md`` and ``docs/img/bench_<dataset>.png``; return the paths."""
    runs, timing = load_results(results)
    if not runs:
        raise SystemExit(f"tf-vib bench: no results in {results}")
    docs = pathlib.Path(docs)
    (docs / "img").mkdir(parents=True, exist_ok=True)
    environment = next(iter(runs.values()))[0].get("environment", {})
    lines = [
        "# Benchmarks: tf-vib against other compression methods",
        "",
        f"Regenerate with `{command}` (results cached in `{_shown(results)}`; add `--report-only` to rewrite this",
        f"file from them). Written {environment.get('date', '?')} on {environment.get('machine', '?')}, Python "
        f"{environment.get('python', '?')}, TensorFlow {environment.get('tensorflow', '?')}, ai-edge-litert "
        f"{environment.get('ai_edge_litert', '?')}.",
        "",
        "Each seed trains one baseline `LSTM(128) -> Dense` (Adam 1e-3, batch 32) on one stratified",
        "80/20 split of the training set until its validation accuracy stops improving (30 epochs'",
        "patience, at most 500, the best epoch restored). `baseline + fine-tune` is that baseline",
        "fine-tuned exactly as every method's model is (compress()'s fine-tuning: same epochs, rate",
        "and distillation); drops are measured against whichever of the two is better on validation",
        "data (the *reference*, per seed). Every method starts from the same baseline and sweeps its",
        "setting (ISS strength, magnitude sparsity with as many epochs as tf-vib's VIB plus fine-tuning,",
        "input-kernel rank, `LSTM(u)` from scratch for u in 4..64 with and without distillation); the",
        "reported point is the smallest whose validation accuracy is within compress()'s bound of the",
        "reference's (0.5 point, never finer than one validation sample), or, where none is, the best on",
        "validation, marked `**no**` under *within bound*. Nothing is chosen on test data. The wall time",
        "is the whole sweep's: what finding the setting costs. `lstm8 (scratch)` is the width search's",
        "`LSTM(8)`: the latency floor of the fused LSTM op over the same number of steps. Figures are",
        "means over seeds (± standard deviation); speed-ups are each file's batch-1, one-thread median",
        "latency against the baseline file of the same mode, all files of a seed timed side by side.",
        f"Tuning sets (compress()'s defaults were chosen on them): {', '.join(TUNING)}. Held-out sets, run",
        f"with compress()'s defaults after a change is decided and reported as they come out: {', '.join(HELD_OUT)}",
        f"(series longer than {MAX_STEPS} samples framed to at most {MAX_STEPS} steps of consecutive samples).",
        f"Reserved for independent checks, never used: {', '.join(RESERVED)}. Each row names the commit its",
        "results come from (cached per data set, seed, method and sweep point; `tf_vib.bench.cache`).",
        *_timing_text(runs),
        "",
    ]
    checks = check_targets(runs, timing)
    if checks:
        lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in checks]
        lines.append("")
    further = further_checks(runs)
    if further:
        lines += ["The same 1.2x latency floor where no target was set: full-int8 files (whose kernel costs",
                  "more per unit, see the curves below) and the float32 files of the other data sets.", "",
                  "| check | measured | within |", "|---|---|---|"]
        lines += [f"| {t} | {m} | {'yes' if ok else 'no'} |" for t, m, ok in further]
        lines.append("")
    if timing:
        lines += ["## VIB training time per epoch", "",
                  "The plain LSTM(128) and its VIB copy (compress()'s defaults) train in turns, one epoch each",
                  "(`tf_vib.bench.runner.vib_epoch_time`); times are medians, the ratio is the median of the turns'",
                  "ratios.", "", "| data set | plain LSTM(128) s/epoch | VIB s/epoch | ratio |",
                  "|---|---|---|---|"]
        lines += [f"| {d} | {t['plain_epoch_s']:.2f} | {t['vib_epoch_s']:.2f} | {t['ratio']:.2f}x |"
                  for d, t in timing.items()]
        lines.append("")
    curves = load_curves(results)
    lines += floor_lines({d: r for d, r in runs.items() if d != PAPER}, curves)
    extra_plots = [plot_curves(curves, docs / "img" / "latency_curve.png")] if curves else []
    if PAPER not in runs:
        lines += ["## paper_size", "", "Not measured in this run: see [paper_size.md](paper_size.md) and",
                  "`tf-vib bench --paper-size`.", ""]
    written = []
    for dataset, records in runs.items():
        table = aggregate(records)
        first = records[0]
        points = sweep_points(records) or _single_points(table)
        plot = plot_pareto(dataset, points, table, docs / "img" / f"bench_{dataset}.png")
        written.append(plot)
        lines += [f"## {dataset}" + (" (held out)" if dataset in HELD_OUT else ""), ""]
        if dataset in HELD_OUT:
            lines += ["Held out: no default of compress() was chosen on it; run after a change is decided, with",
                      "compress()'s defaults, and reported as it comes out.", ""]
        if first.get("framed"):
            framed = first["framed"]
            lines += [f"Series of {framed['steps']} samples framed to {first['input_shape'][0]} steps of "
                      f"{first['input_shape'][1]} consecutive samples (`tf_vib.bench.data.frame`).", ""]
        if dataset == PAPER:
            lines += _paper_text(first)
        lines += [
            f"Inputs {tuple(first['input_shape'])}; {first['n_train']} training, {first['n_val']} validation, "
            f"{first['n_test']} test sequences; seeds {sorted(r['seed'] for r in records)}"
            + (" (quick run: a few epochs, not representative)" if first.get("quick") else "") + ".", "",
            f"![{dataset}](img/{plot.name})", "",
            "```", method_table(table), "```", "",
            "TFLite files (sizes in KB; speed-ups against the baseline file of the same mode):", "",
            "```", _file_table(table), "```", "",
        ]
        if first.get("sweeps"):
            references = sorted({r["reference"] for r in records})
            lines += [f"Every sweep point (reference: {', '.join(references)}; * missed the bound in some seed):",
                      "", "```", sweep_table(points), "```", ""]
    path = docs / "benchmarks.md"
    path.write_text("\n".join(lines) + "\n")
    return [path, *written, *extra_plots]
