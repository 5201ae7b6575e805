"""A CNN-LSTM action recogniser on a Raspberry Pi, end to end (issue 17, item 5): baseline
against compressed (frame pruning, channel pruning into the CNN, ``quantization="auto"``).

    PYTHONPATH=. nice -n 10 python benchmarks/har_pipeline.py [--quick] [--no-pi]

Data: ``tf_vib.datasets.synthetic_actions`` (7 motions, generated offline), at least 1,000
test clips in the full run, the validation clips held out of the training ones (every
choice is made on them, the test clips only report). Model:
``TimeDistributed(MobileNetV3Small(weights=None, include_top=False, pooling="avg")) ->
LSTM -> Dense``, the backbone at a small resolution so it trains on a 2-core CPU. The
baseline trains until its validation accuracy stops improving (best epoch kept); then
``tf_vib.compress(..., frame_masks=True)``. Files: the baseline in float32, the compressed
model in float32 and ``quantization="auto"``, each verified on the test clips, plus each
model's CNN (one frame) and LSTM head (the frames' features) as files of their own, so the
emulated Pi shows where a clip's instructions go, and the compressed model's streaming file.

Instruction counts come from ``pi-run`` (an emulated Raspberry Pi 4 userland, both
ai-edge-litert and tflite-runtime 2.14; ``benchmarks/emulated_pi.py``) when it is found;
otherwise the JSON says ``"pi": "pi-run not found"`` and holds no counts. Trained models are
cached under ``--work`` (benchmarks/results/har/, not committed) by a digest of the
settings; the JSON goes to ``--out``, the plot to ``--plot``.
"""

import argparse
import hashlib
import json
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from emulated_pi import find_pi_run, git_commit, pi_counts  # noqa: E402

import converters  # noqa: E402
import tf_vib  # noqa: E402
from tf_vib._keras import keras  # noqa: E402
from tf_vib.datasets import select_frames, synthetic_actions  # noqa: E402
from tf_vib.datasets.sequences import stratified_indices  # noqa: E402

FULL = {"per_class": 600, "test_fraction": 0.25, "frames": 8, "size": 32, "alpha": 0.5, "units": 32,
        "max_epochs": 40, "patience": 6, "vib_epochs": 20, "finetune_epochs": 8, "batch_size": 32,
        "max_accuracy_drop": 0.005}
QUICK = {"per_class": 4, "test_fraction": 0.5, "frames": 4, "size": 32, "alpha": 0.35, "units": 8,
         "max_epochs": 2, "patience": 1, "vib_epochs": 1, "finetune_epochs": 1, "batch_size": 8,
         "max_accuracy_drop": 0.5}
RUNTIMES = ("ai-edge-litert", "tflite-runtime-2.14")
#: The settings the data and the baseline depend on: its cache is keyed by these alone, so a
#: rerun with other compress() settings reuses the trained baseline.
BASELINE_KEYS = ("per_class", "test_fraction", "frames", "size", "alpha", "units", "max_epochs", "patience",
                 "batch_size")


def clip_model(settings, n_classes):
    """``TimeDistributed(MobileNetV3Small) -> LSTM -> Dense`` (logits), random weights."""
    size = settings["size"]
    backbone = keras.applications.MobileNetV3Small(
        input_shape=(size, size, 3), alpha=settings["alpha"], weights=None, include_top=False,
        pooling="avg", include_preprocessing=False)  # the clips are already in [0, 1]
    for layer in backbone.layers:  # keras.applications' 0.999 needs thousands of steps: a few
        if isinstance(layer, keras.layers.BatchNormalization):  # hundred here left validation at chance
            layer.momentum = 0.9
    clips = keras.Input((settings["frames"], size, size, 3), name="clip")
    h = keras.layers.TimeDistributed(backbone, name="frames")(clips)
    h = keras.layers.LSTM(settings["units"], name="lstm")(h)
    return keras.Model(clips, keras.layers.Dense(n_classes, name="logits")(h), name="har")


def _compile(model, learning_rate=1e-3):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=64, verbose=0), axis=-1) == y))


def data_splits(settings, seed=0):
    """Train, validation (20% of the training clips, stratified) and test clips."""
    data = synthetic_actions(settings["per_class"], frames=settings["frames"], size=settings["size"],
                             test_fraction=settings["test_fraction"], seed=seed)
    train, val = stratified_indices(data.y_train, 0.2, seed=seed)
    return ((data.x_train[train], data.y_train[train]), (data.x_train[val], data.y_train[val]),
            (data.x_test, data.y_test), data.n_classes)


def train_baseline(settings, train, val, n_classes, seed=0):
    """Trained until the validation accuracy has not improved for ``patience`` epochs; the
    best epoch's weights are kept. Returns the model and its history."""
    keras.utils.set_random_seed(seed)
    model = _compile(clip_model(settings, n_classes))
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=settings["patience"],
                                         restore_best_weights=True)
    history = model.fit(*train, validation_data=val, epochs=settings["max_epochs"],
                        batch_size=settings["batch_size"], callbacks=[stop], verbose=2)
    return model, {k: [float(v) for v in values] for k, values in history.history.items()}


def _cached(path, make):
    """``make()``'s model, saved at ``path`` and loaded from there on a rerun."""
    if path.exists():
        return keras.models.load_model(path, compile=False), json.loads(path.with_suffix(".json").read_text())
    model, info = make()
    model.save(path)
    path.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    return model, info


def parts(model):
    """The model's per-frame CNN (one frame in) and its head (the frames' features in: the
    layers after the TimeDistributed CNN, a chain)."""
    index = next(i for i, layer in enumerate(model.layers) if isinstance(layer, keras.layers.TimeDistributed)
                 and isinstance(layer.layer, keras.Model))
    distributed = model.layers[index]
    cnn = distributed.layer
    features = keras.Input(distributed.output_shape[1:], name="features")
    h = features
    for layer in model.layers[index + 1:]:
        h = layer(h)
    return cnn, keras.Model(features, h, name="head")


def _file_sizes(flat):
    import gzip

    return {"bytes": len(flat), "gzip_bytes": len(gzip.compress(flat, 9))}


def _verify(model, flat, x, y):
    check = converters.verify(model, flat, x, y)
    return {"keras_accuracy": check.keras_accuracy, "tflite_accuracy": check.tflite_accuracy,
            "max_abs_diff": check.max_abs_diff, "argmax_agreement": check.argmax_agreement,
            "passed": check.passed, "criterion": check.criterion, "runtime": check.runtime}


def write_files(name, model, modes, x_repr, x_test, y_test, work, y_repr=None):
    """The whole-clip file of each mode (verified on the test clips), its CNN and head files.

    An ``auto`` whole-clip file takes ``quantization="auto"``'s fallback, judged on the
    calibration clips and their labels ``y_repr``; its CNN and head files keep the cost
    table's plan (``fallback=False``: they show where that plan's instructions go, and a
    feature extractor has no classes to verify by).
    """
    cnn, head = parts(model)
    frames_repr = x_repr.reshape(-1, *x_repr.shape[2:])[:: max(1, x_repr.shape[1] // 2)]
    features_repr = cnn.predict(x_repr.reshape(-1, *x_repr.shape[2:]), batch_size=256, verbose=0).reshape(
        len(x_repr), x_repr.shape[1], -1)
    check = {"verify_data": (x_repr, y_repr)} if "auto" in modes and y_repr is not None else {}
    flats = {part: converters.to_tflite_many(part_model, modes, representative_data=representative,
                                             fallback=part == "whole", **(check if part == "whole" else {}))
             for part, part_model, representative in (("whole", model, x_repr), ("cnn", cnn, frames_repr),
                                                      ("head", head, features_repr))}
    rows = {}
    for mode in modes:
        row = {}
        for part in ("whole", "cnn", "head"):
            flat = flats[part][mode]
            path = work / f"{name}_{mode}_{part}.tflite"
            path.write_bytes(flat)
            info = converters.describe_tflite(flat)
            row[part] = {"file": path.name, **_file_sizes(flat), "quantization": info.quantization}
            if mode == "auto":
                row[part]["plan"] = (info.tf_vib or {}).get("quantization_plan")
                row[part]["fallback"] = (info.tf_vib or {}).get("quantization_fallback")  # steps tried
        started = time.perf_counter()
        row["whole"]["verification"] = _verify(model, flats["whole"][mode], x_test, y_test)
        row["whole"]["verify_seconds"] = round(time.perf_counter() - started, 1)
        print(f"{name} {mode}: {row['whole']['bytes']:,} bytes, {row['whole']['verification']}", flush=True)
        rows[mode] = row
    return rows


def streaming_file(name, model, mode, x_repr, x_test, y_test, work):
    """The one-frame-per-invoke file of ``model`` (verified over whole clips), or the reason
    it could not be made."""
    try:
        flat = converters.to_tflite(model, quantization=mode, representative_data=x_repr, streaming=True)
    except Exception as error:  # recorded, not hidden: the JSON says why there is no file
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
    path = work / f"{name}_{mode}_stream.tflite"
    path.write_bytes(flat)
    check = converters.verify_streaming(model, flat, x_test, y_test)
    info = converters.describe_tflite(flat)
    return {"file": path.name, **_file_sizes(flat), "quantization": info.quantization,
            "plan": (info.tf_vib or {}).get("quantization_plan"),
            "fallback": (info.tf_vib or {}).get("quantization_fallback"),
            "verification": str(check), "passed": bool(check.passed)}


def count(files, pi_run, work, ninv):
    """Instructions per invoke of every file, per runtime, or None without pi-run."""
    if pi_run is None:
        return None
    return pi_counts(pi_run, [work / name for name in files], ninv=ninv)


def pipeline_costs(files, counts, kept):
    """Per runtime and file: instructions per clip of the whole file, and of its CNN x frames
    plus its head (where the time goes)."""
    table = {}
    for runtime, by_file in counts.items():
        for label, row in files.items():
            whole, cnn, head = (by_file.get(row[p]["file"]) for p in ("whole", "cnn", "head"))
            frames = kept[label]
            table.setdefault(runtime, {})[label] = {
                "whole_per_clip": whole, "cnn_per_frame": cnn, "frames": frames,
                "cnn_per_clip": None if cnn is None else cnn * frames, "head_per_clip": head,
                "cnn_share": None if None in (cnn, head) else cnn * frames / (cnn * frames + head),
            }
    return table


def plot(result, path):
    """Stacked bars per runtime: the CNN x frames and the LSTM head per clip, and the whole file."""
    costs = result.get("instructions")
    if not costs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(next(iter(costs.values())))
    fig, axes = plt.subplots(1, len(costs), figsize=(5.2 * len(costs), 3.8), squeeze=False)
    for ax, (runtime, rows) in zip(axes[0], costs.items(), strict=True):
        cnn = np.array([rows[k]["cnn_per_clip"] for k in labels]) / 1e6
        head = np.array([rows[k]["head_per_clip"] for k in labels]) / 1e6
        whole = np.array([rows[k]["whole_per_clip"] for k in labels]) / 1e6
        at = np.arange(len(labels))
        ax.bar(at, cnn, 0.6, label="CNN file x frames")
        ax.bar(at, head, 0.6, bottom=cnn, label="LSTM head file")
        ax.scatter(at, whole, color="black", marker="_", s=500, label="whole-clip file", zorder=3)
        ax.set_xticks(at, [k.replace(" ", "\n") for k in labels], fontsize=8)
        ax.set_ylabel("million arm64 instructions per clip")
        ax.set_title(f"emulated Cortex-A72, {runtime}", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def targets(result):
    """Each target judged from the run: frames (Keras accuracy), the pipeline (each compressed
    file against the float32 baseline file, its own file's accuracy) and the streaming files
    (each against the whole-clip file of the same mode)."""
    acc = result["accuracy"]
    base, comp = acc["baseline"], acc["compressed"]
    frames = result["frames"]
    checks = {
        "frames": {"ratio": frames["of"] / len(frames["kept"]),
                   "keras_loss_points": 100 * (base["keras"] - comp["keras"])},
    }
    checks["frames"]["met"] = checks["frames"]["ratio"] >= 2 and checks["frames"]["keras_loss_points"] <= 1
    costs = result.get("instructions")
    if costs:
        checks["pipeline"] = {}
        for runtime, rows in costs.items():
            for mode in ("float32", "auto"):
                ratio = rows["baseline float32"]["whole_per_clip"] / rows[f"compressed {mode}"]["whole_per_clip"]
                loss = 100 * (base["tflite float32"] - comp[f"tflite {mode}"])
                checks["pipeline"].setdefault(runtime, {})[f"compressed {mode}"] = {
                    "ratio": ratio, "tflite_loss_points": loss, "met": ratio >= 4 and loss <= 1}
        checks["streaming"] = {}
        for mode, stream in result.get("streaming", {}).items():
            for runtime, by_file in result["raw_counts"].items():
                per_invoke = by_file.get(stream.get("file"))
                whole = costs[runtime][f"compressed {mode}"]["whole_per_clip"]
                if per_invoke is not None and whole:
                    ratio = per_invoke * len(frames["kept"]) / whole
                    checks["streaming"].setdefault(runtime, {})[mode] = {
                        "per_invoke": per_invoke, "ratio": ratio, "met": ratio <= 1.2}
    return checks


def tables(result):
    """The doc's tables (markdown) from the JSON: accuracy and frames, files, instructions."""
    acc, params, frames = result["accuracy"], result["params"], result["frames"]
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    lines = ["| model | frames per clip | CNN features | parameters (CNN + head) | validation | "
             "test, Keras | test, float32 file | test, auto file |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, count in (("baseline", frames["of"]), ("compressed", len(frames["kept"]))):
        a, p = acc[name], params[name]
        lines.append(f"| {name} | {count} | {result['features'][name]} | {p['total']:,} ({p['cnn']:,} + "
                     f"{p['head']:,}) | {pct(a['validation'])} | {pct(a['keras'])} | {pct(a['tflite float32'])} | "
                     f"{pct(a.get('tflite auto'))} |")
    lines += ["", "| file | quantization | bytes | gzip bytes | CNN file bytes | head file bytes | verified |",
              "|---|---|---:|---:|---:|---:|---|"]
    for label, row in result["files"].items():
        v = row["whole"]["verification"]
        criterion = v["criterion"].replace("|", "\\|")  # inside a table cell
        lines.append(f"| {label} | {row['whole']['quantization']} | {row['whole']['bytes']:,} | "
                     f"{row['whole']['gzip_bytes']:,} | {row['cnn']['bytes']:,} | {row['head']['bytes']:,} | "
                     f"{'passed' if v['passed'] else 'FAILED'} ({criterion}, max diff {v['max_abs_diff']:.2g}) |")
    for runtime, rows in (result.get("instructions") or {}).items():
        lines += ["", f"{runtime}:", "", "| file | whole clip, 1 invoke | CNN per frame | x frames | "
                  "LSTM head | CNN share | vs baseline |", "|---|---:|---:|---:|---:|---:|---:|"]
        base = rows["baseline float32"]["whole_per_clip"]
        for label, r in rows.items():
            lines.append(f"| {label} | {r['whole_per_clip']:,} | {r['cnn_per_frame']:,} | {r['cnn_per_clip']:,} "
                         f"(x{r['frames']}) | {r['head_per_clip']:,} | {pct(r['cnn_share'])} | "
                         f"{base / r['whole_per_clip']:.2f}x |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data and epochs: a check that it runs")
    parser.add_argument("--no-pi", action="store_true", help="do not run pi-run even when it is found")
    parser.add_argument("--pi-run", default=None, help="path of pi-run (default: found beside the checkout)")
    parser.add_argument("--ninv", type=int, default=2, help="invokes per file on the emulated Pi")
    parser.add_argument("--baseline-only", action="store_true", help="train (or load) the baseline, then stop")
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / "results" / "har"))
    parser.add_argument("--out", default=None, help="JSON (default benchmarks/results/har_pipeline.json)")
    parser.add_argument("--plot", default=None, help="PNG (default docs/img/har_pipeline.png)")
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    out = pathlib.Path(args.out or ROOT / "benchmarks" / "results" / ("har_pipeline_quick.json" if args.quick
                                                                       else "har_pipeline.json"))
    plot_path = pathlib.Path(args.plot or (out.with_suffix(".png") if args.quick
                                           else ROOT / "docs" / "img" / "har_pipeline.png"))
    work = pathlib.Path(args.work) / _digest(settings)
    work.mkdir(parents=True, exist_ok=True)
    baseline_path = pathlib.Path(args.work) / f"baseline-{_digest({k: settings[k] for k in BASELINE_KEYS})}.keras"
    started = time.perf_counter()

    train, val, test, n_classes = data_splits(settings)
    print(f"clips: train {len(train[1])}, validation {len(val[1])}, test {len(test[1])}", flush=True)
    baseline, history = _cached(baseline_path, lambda: train_baseline(settings, train, val, n_classes))
    seconds = {"baseline": round(time.perf_counter() - started, 1)}
    print(f"baseline: validation {accuracy(baseline, *val):.4f} (best of {len(history['val_accuracy'])} epochs)",
          flush=True)
    if args.baseline_only:
        return None

    def run_compress():
        compiled = _compile(baseline)
        result = tf_vib.compress(
            compiled, train, validation_data=val, test_data=test, frame_masks=True,
            epochs=settings["vib_epochs"], finetune_epochs=settings["finetune_epochs"],
            batch_size=settings["batch_size"], max_accuracy_drop=settings["max_accuracy_drop"], verbose=2)
        print(result.report, flush=True)
        return result.model, {"report": result.report.to_dict(), "text": str(result.report)}

    compressed, report = _cached(work / "compressed.keras", run_compress)
    seconds["compress"] = round(time.perf_counter() - started - seconds["baseline"], 1)
    frames = report["report"]["frames"] or {"kept": list(range(settings["frames"])), "of": settings["frames"]}
    x_test_kept = select_frames(test[0], frames)
    repr_idx = np.random.default_rng(0).permutation(len(train[1]))[:200]
    x_repr = train[0][repr_idx]

    files = {}
    base_files = write_files("baseline", baseline, ["float32"], x_repr, *test, work)
    comp_files = write_files("compressed", compressed, ["float32", "auto"], select_frames(x_repr, frames),
                             x_test_kept, test[1], work, y_repr=train[1][repr_idx])
    files["baseline float32"] = base_files["float32"]
    files["compressed float32"] = comp_files["float32"]
    files["compressed auto"] = comp_files["auto"]
    stream = {mode: streaming_file("compressed", compressed, mode, select_frames(x_repr, frames),
                                   x_test_kept[:200], test[1][:200], work) for mode in ("float32", "auto")}
    seconds["files"] = round(time.perf_counter() - started - sum(seconds.values()), 1)

    cnn_base, head_base = parts(baseline)
    cnn_comp, head_comp = parts(compressed)
    result = {
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "quick": args.quick,
        "settings": settings,
        "clips": {"train": len(train[1]), "validation": len(val[1]), "test": len(test[1])},
        "baseline_history": history,
        "frames": frames,
        "params": {"baseline": {"total": baseline.count_params(), "cnn": cnn_base.count_params(),
                                "head": head_base.count_params()},
                   "compressed": {"total": compressed.count_params(), "cnn": cnn_comp.count_params(),
                                  "head": head_comp.count_params()}},
        "features": {"baseline": int(cnn_base.output_shape[-1]), "compressed": int(cnn_comp.output_shape[-1])},
        "accuracy": {
            "baseline": {"keras": accuracy(baseline, *test),
                         "validation": accuracy(baseline, *val),
                         "tflite float32": files["baseline float32"]["whole"]["verification"]["tflite_accuracy"]},
            "compressed": {"keras": accuracy(compressed, x_test_kept, test[1]),
                           "validation": accuracy(compressed, select_frames(val[0], frames), val[1]),
                           "tflite float32": files["compressed float32"]["whole"]["verification"]["tflite_accuracy"],
                           "tflite auto": files["compressed auto"]["whole"]["verification"]["tflite_accuracy"]},
        },
        "compress_report": report["text"],
        "files": files,
        "streaming": stream,
    }
    pi_run = None if args.no_pi else (args.pi_run or find_pi_run())
    if pi_run is None:
        result["pi"] = "pi-run not found" if not args.no_pi else "pi-run not run (--no-pi)"
        print(f"no instruction counts: {result['pi']}")
    else:
        names = [row[p]["file"] for row in files.values() for p in ("whole", "cnn", "head")]
        names += [row["file"] for row in stream.values() if row.get("file")]
        names.append(_empty_file(work))
        raw = count(names, pi_run, work, args.ninv)
        result["pi"] = {"pi_run": pi_run, "cpu": "cortex-a72", "ninv": args.ninv,
                        "unit": "arm64 instructions of the last invoke (batch 1, one thread)"}
        result["raw_counts"] = raw
        kept = {"baseline float32": frames["of"], "compressed float32": len(frames["kept"]),
                "compressed auto": len(frames["kept"])}
        result["instructions"] = pipeline_costs(files, raw, kept)
    seconds["pi"] = round(time.perf_counter() - started - sum(seconds.values()), 1)
    result["seconds"] = seconds
    result["targets"] = targets(result)
    result["plot"] = plot(result, plot_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(tables(result))
    print(json.dumps(result["targets"], indent=1))
    print(f"written: {out}")
    return result


def _digest(settings):
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def _empty_file(work):
    """A file with one ADD: what an invoke costs before any work."""
    path = work / "empty.tflite"
    if not path.exists():
        empty = keras.Sequential([keras.Input((12,)), keras.layers.Rescaling(1.0, offset=1.0)])
        path.write_bytes(converters.to_tflite(empty, quantization="float32"))
    return path.name


if __name__ == "__main__":
    main()
