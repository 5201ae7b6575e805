"""``docs/benchmarks.md`` and its plots, from the per-run JSON that ``tf-vib bench`` saves."""

import pathlib

import numpy as np

from tf_vib.bench.aggregate import (
    PAPER,
    aggregate,
    check_targets,
    further_checks,
    load_curves,
    load_results,
)
from tf_vib.bench.floor import floor_lines, plot_curves
from tf_vib.report import format_table

__all__ = ["write_report"]


def _fmt(stat, scale=1.0, digits=2, spread=True):
    mean, std = stat
    if np.isnan(mean):
        return "-"
    text = f"{scale * mean:,.{digits}f}"
    return f"{text} ± {scale * std:.{digits}f}" if spread else text


def _method_table(table):
    rows = []
    for method, e in table.items():
        int8 = e["files"].get("int8", {})
        rows.append((
            method, _fmt(e["lstm_params"], digits=0, spread=False), _fmt(e["lstm_ratio"], digits=1, spread=False) + "x",
            _fmt(e["lstm_nonzero"], digits=0, spread=False), _fmt(e["nonzero_ratio"], digits=1, spread=False) + "x",
            _fmt(e["params"], digits=0, spread=False), _fmt(e["keras_accuracy"], 100),
            _fmt(e["drop_points"]), _fmt(int8.get("tflite_accuracy", (np.nan, np.nan)), 100),
            "-" if e["inputs_kept"] is None else f"{100 * (1 - e['inputs_kept'][0]):.1f}%",
        ))
    return format_table(("method", "LSTM params", "fewer", "nonzero LSTM", "fewer (nonzero)", "model params",
                         "test acc % (Keras)", "drop (points)", "test acc % (int8 file)",
                         "inputs removed"), rows)


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


def plot_dataset(dataset, table, path):
    """Test accuracy against nonzero LSTM parameters, with the Pareto front."""
    from tf_vib._plots import figure

    with figure(path, size=(7.2, 4.6), xlabel="nonzero LSTM parameters (mean over seeds)",
                ylabel="test accuracy % (Keras, mean ± std)", title=f"{dataset}: accuracy against LSTM size",
                legend={"fontsize": 7, "ncol": 2}) as (plt, ax):
        points = []
        colors = plt.get_cmap("tab20").colors  # one colour per method (tab10 repeats after 10)
        for index, (method, e) in enumerate(table.items()):
            x, y, err = e["lstm_nonzero"][0], 100 * e["keras_accuracy"][0], 100 * e["keras_accuracy"][1]
            points.append((x, y, method))
            style = {"marker": "*", "s": 160} if method.startswith("vib") else {"marker": "o", "s": 50}
            ax.errorbar(x, y, yerr=err, fmt="none", ecolor="grey", alpha=0.6)
            ax.scatter(x, y, label=method, zorder=3, color=colors[(2 * index) % 20 + (index >= 10)], **style)
        front, best = [], -np.inf
        for x, y, _ in sorted(points):
            if y > best:
                front.append((x, y))
                best = y
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="black", lw=1, ls="--",
                label="Pareto front")
        ax.set_xscale("log")
    return path


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
        "Each seed trains one baseline `LSTM(128) -> Dense` (60 epochs, Adam 1e-3) on one stratified",
        "80/20 split of the training set; every method compresses that same baseline through",
        "`tf_vib.compress` (same validation data, same fine-tuning budget; nothing is chosen on test",
        "data). `lstm8 (scratch)` is an `LSTM(8)` trained from scratch: the latency floor of the fused",
        "LSTM op over the same number of steps. Figures are means over seeds (± standard deviation);",
        "speed-ups are each file's batch-1, one-thread median latency against the baseline file of",
        "the same mode, all files of a seed timed side by side in one process.",
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
        plot = plot_dataset(dataset, table, docs / "img" / f"bench_{dataset}.png")
        written.append(plot)
        lines += [f"## {dataset}", ""]
        if dataset == PAPER:
            lines += _paper_text(first)
        lines += [
            f"Inputs {tuple(first['input_shape'])}; {first['n_train']} training, {first['n_val']} validation, "
            f"{first['n_test']} test sequences; seeds {sorted(r['seed'] for r in records)}"
            + (" (quick run: a few epochs, not representative)" if first.get("quick") else "") + ".", "",
            f"![{dataset}](img/{plot.name})", "",
            "```", _method_table(table), "```", "",
            "TFLite files (sizes in KB; speed-ups against the baseline file of the same mode):", "",
            "```", _file_table(table), "```", "",
        ]
    path = docs / "benchmarks.md"
    path.write_text("\n".join(lines) + "\n")
    return [path, *written, *extra_plots]
