"""The report's view of the sweeps: the chosen point per method, every point, the Pareto plot."""

import numpy as np

from tf_vib.compress._summary import format_table

__all__ = ["fmt", "method_table", "sweep_table", "plot_pareto"]


def fmt(stat, scale=1.0, digits=2, spread=True):
    """``mean ± std`` of a ``(mean, std)`` pair, or "-" when there is none."""
    mean, std = stat
    if np.isnan(mean):
        return "-"
    text = f"{scale * mean:,.{digits}f}"
    return f"{text} ± {scale * std:.{digits}f}" if spread else text


def _met(flags):
    """'yes', '**no**' or 'k/n' seeds within the bound; '-' for rows the bound does not apply to."""
    flags = [f for f in flags if f is not None]
    if not flags:
        return "-"
    if all(flags):
        return "yes"
    return "**no**" if not any(flags) else f"{sum(flags)}/{len(flags)}"


def method_table(table):
    """One row per method: its chosen point, sizes, accuracies, drop, bound, wall time, commit."""
    rows = []
    for method, e in table.items():
        int8 = e["files"].get("int8", {})
        rows.append((
            method, " / ".join(e.get("points") or ["-"]),
            fmt(e["lstm_params"], digits=0, spread=False), fmt(e["lstm_ratio"], digits=1, spread=False) + "x",
            fmt(e["lstm_nonzero"], digits=0, spread=False), fmt(e["nonzero_ratio"], digits=1, spread=False) + "x",
            fmt(e["params"], digits=0, spread=False), fmt(e.get("val_accuracy", (np.nan, np.nan)), 100),
            fmt(e["keras_accuracy"], 100), fmt(e["drop_points"]), _met(e.get("bound_met", [])),
            fmt(int8.get("tflite_accuracy", (np.nan, np.nan)), 100),
            "-" if e["inputs_kept"] is None else f"{100 * (1 - e['inputs_kept'][0]):.1f}%",
            fmt(e.get("sweep_seconds", e["seconds"]), digits=0, spread=False), ", ".join(e.get("commits", [])),
        ))
    return format_table(("method", "chosen setting", "LSTM params", "fewer", "nonzero LSTM", "fewer (nonzero)",
                         "model params", "val acc %", "test acc % (Keras)", "drop (points)", "within bound",
                         "test acc % (int8 file)", "inputs removed", "wall time s (sweep)", "commit"), rows)


def sweep_table(points):
    """Every sweep point: sizes, accuracies, in how many seeds it met the bound, its wall time."""
    rows = [(method, p["point"], fmt(p["lstm_nonzero"], digits=0, spread=False), fmt(p["val_accuracy"], 100),
             fmt(p["keras_accuracy"], 100), f"{p['met']}/{p['seeds']}" + ("" if p["met"] == p["seeds"] else " *"),
             fmt(p["seconds"], digits=0, spread=False))
            for method, entries in points.items() for p in entries]
    return format_table(("method", "point", "nonzero LSTM", "val acc %", "test acc %", "within bound",
                         "seconds"), rows)


def plot_pareto(dataset, points, table, path):
    """Test accuracy against nonzero LSTM parameters: every method's whole sweep (hollow: a
    point that missed the bound in some seed), the baseline, and the Pareto front."""
    from tf_vib._plots import figure

    with figure(path, size=(7.6, 4.8), xlabel="nonzero LSTM parameters (mean over seeds)",
                ylabel="test accuracy % (Keras, mean over seeds)", title=f"{dataset}: every sweep point",
                legend={"fontsize": 7, "ncol": 2}) as (plt, ax):
        colors = plt.get_cmap("tab20").colors
        everything = [(e["lstm_nonzero"][0], 100 * e["keras_accuracy"][0]) for e in table.values()
                      if not np.isnan(e["lstm_nonzero"][0])]
        for index, (method, entries) in enumerate(points.items()):
            color = colors[(2 * index) % 20 + (index >= 10)]
            x = np.array([p["lstm_nonzero"][0] for p in entries])
            y = np.array([100 * p["keras_accuracy"][0] for p in entries])
            met = np.array([p["met"] == p["seeds"] for p in entries])
            marker = "*" if method.startswith("vib") else "o"
            size = 140 if marker == "*" else 40
            order = np.argsort(x)
            ax.plot(x[order], y[order], color=color, lw=0.8, alpha=0.6)
            ax.scatter(x[met], y[met], color=color, marker=marker, s=size, zorder=3, label=method)
            ax.scatter(x[~met], y[~met], facecolors="none", edgecolors=color, marker=marker, s=size, zorder=3)
            everything += list(zip(x, y, strict=True))
        if "baseline" in table:
            base = table["baseline"]
            ax.scatter(base["lstm_nonzero"][0], 100 * base["keras_accuracy"][0], color="black", marker="s",
                       s=50, zorder=4, label="baseline")
        front, best = [], -np.inf
        for x, y in sorted(everything):
            if y > best:
                front.append((x, y))
                best = y
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="black", lw=1, ls="--",
                label="Pareto front")
        ax.set_xscale("log")
    return path
