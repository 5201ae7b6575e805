"""The report's latency-floor section: compressed files against the LSTM(8) floor, and the
latency of ``LSTM(u)`` files against ``u``."""

from tf_vib.bench.aggregate import FLOOR

__all__ = ["floor_lines", "plot_curves"]


def _recurrent_layer(run):
    """``(kind, units, inputs kept)`` of the compressed model's recurrent layer, or None."""
    layers = [layer for layer in run.get("layers") or [] if layer["kind"] in ("LSTM", "GRU")]
    return (layers[0]["kind"], layers[0]["units_kept"], layers[0]["inputs_kept"]) if len(layers) == 1 else None


def _trim_note(trim):
    """What compress()'s trim to a multiple of 4 did to the run's LSTMs, in a few words."""
    if not trim:
        return ""
    sizes = trim["layers"].values()
    if trim["accepted"]:
        return ", trimmed from " + "/".join(str(s["units"]) for s in sizes)
    return (", trim to " + "/".join(str(s["trimmed_units"]) for s in sizes)
            + f" refused ({100 * trim['fine_tuned_accuracy']:.2f}% validation, "
            f"{100 * trim['target']:.2f}% needed)")


def floor_lines(runs, curves):
    """The latency floor section: each seed's compressed file against its LSTM(8), and the
    latency of LSTM(u) files against u."""
    from converters import plan as planning

    lines = ["## Latency against the LSTM(8) floor", "",
             "Each seed's compressed (`vib`) files against the `LSTM(8)` trained in the same run, timed",
             "side by side. The float files hold the LSTM padded with zero units to a multiple of 4",
             "(the converter's `unit_multiple='auto'`: same outputs, faster float kernels); int8 files",
             "keep the compressed size. `GATHER` says the kept input features are selected by a gather",
             "rather than zero kernel rows. \"Trimmed from 13\": compress() chose 13 units and its trim to",
             "a multiple of 4 (`unit_multiple`: the noisiest units dropped, then fine-tuned) reached the",
             "chosen model's validation accuracy; \"refused\": it did not, and the chosen size stayed.", "",
             "| data set | seed | compressed layer | float32 us | LSTM(8) us | ratio | int8 us | LSTM(8) us | ratio "
             "| gather |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for dataset, records in runs.items():
        for record in sorted(records, key=lambda r: r["seed"]):
            vib, floor = record["runs"].get("vib"), record["runs"].get(FLOOR)
            if not vib or not floor:
                continue
            shape = _recurrent_layer(vib)
            layer = "?"
            if shape:
                layer = f"{shape[0]}({shape[1]}) on {shape[2]} of {record['input_shape'][-1]} inputs"
                layer += _trim_note(vib.get("trim"))
                padded = planning.padded_units(shape[1], planning.resolve_unit_multiple("auto", "float32"))
                if shape[0] == "LSTM" and padded != shape[1]:
                    layer += f", {padded} units in float files"
            cells = []
            for mode in ("float32", "int8"):
                mine, base = vib["files"].get(mode), floor["files"].get(mode)
                cells += ([f"{mine['latency_us']:.1f}", f"{base['latency_us']:.1f}",
                           f"{mine['latency_us'] / base['latency_us']:.2f}x"] if mine and base else ["-"] * 3)
            gather = "GATHER" in vib["files"].get("float32", {}).get("ops", "")
            lines.append(f"| {dataset} | {record['seed']} | {layer} | {' | '.join(cells)} | "
                         f"{'yes' if gather else 'no'} |")
    lines.append("")
    if curves:
        within = "; ".join(f"{d}: {_largest_within(c, 'float32')} units in float32, "
                           f"{_largest_within(c, 'int8')} in int8" for d, c in curves.items())
        lines += ["What an LSTM of each size costs on each data set's input shape (`LSTM(u) -> Dense`,",
                  "random weights, every file timed side by side; ratios to `LSTM(8)`): the fused op's time",
                  "grows with the units at these sizes (in steps of 4 units in float32, which is why the",
                  "converter pads), so the 1.2x target is a target on the compressed size.",
                  f"The largest measured LSTM within 1.2x of `LSTM(8)`: {within}.", "",
                  "![latency against units](img/latency_curve.png)", ""]
        for dataset, curve in curves.items():
            f32, i8 = curve["float32_us"], curve["int8_us"]
            eight = curve["units"].index(8) if 8 in curve["units"] else None
            lines += [f"{dataset}, inputs {tuple(curve['input_shape'])}:", "",
                      "| units | float32 us | / LSTM(8) | int8 us | / LSTM(8) |", "|---|---|---|---|---|"]
            for index, units in enumerate(curve["units"]):
                ratios = [f"{v[index] / v[eight]:.2f}x" if eight is not None else "-" for v in (f32, i8)]
                lines.append(f"| {units} | {f32[index]:.1f} | {ratios[0]} | {i8[index]:.1f} | {ratios[1]} |")
            lines.append("")
    return lines


def _largest_within(curve, mode, ratio=1.2):
    """The most units of ``curve``, counting up from 8, before a latency above ``ratio`` x LSTM(8)'s."""
    if 8 not in curve["units"]:
        return "?"
    times = curve[f"{mode}_us"]
    start = curve["units"].index(8)
    largest = 8
    for units, seconds in zip(curve["units"][start:], times[start:], strict=True):
        if seconds > ratio * times[start]:
            break
        largest = units
    return largest


def plot_curves(curves, path):
    """Latency of LSTM(u) files against u, one line per data set and mode."""
    from tf_vib._plots import figure

    with figure(path, size=(7.2, 4.2), xlabel="LSTM units", ylabel="latency per invoke, us (batch 1, one thread)",
                title="TFLite fused LSTM: latency against size", legend={"fontsize": 7}) as (_, ax):
        for dataset, curve in curves.items():
            for mode, style in (("float32", "-o"), ("int8", "--s")):
                ax.plot(curve["units"], curve[f"{mode}_us"], style, label=f"{dataset} {mode}", ms=4)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.axvline(8, color="grey", lw=0.8, ls=":")
    return path
