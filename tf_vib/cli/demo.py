"""``tf-vib demo``: the whole story on an offline data set in a few minutes.

Train a baseline LSTM, compress it, convert both to TFLite (dynamic-range and full
int8), evaluate the files, and print one table with the ratios; write the compressed
files, the report JSON and an accuracy-vs-size plot into the output folder.
"""

import json
import pathlib
import time

__all__ = ["add_command", "run", "DEMO_MODES"]

DEMO_MODES = ("dynamic", "int8")


def add_command(commands):
    parser = commands.add_parser(
        "demo",
        help="train, compress, convert and measure an LSTM on an offline data set",
        description=__doc__,
    )
    parser.add_argument("--dataset", default="JapaneseVowels",
                        help="'digits_rows' or a UEA set bundled with aeon (default: JapaneseVowels)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--output", default="tf-vib-demo", help="output folder (default ./tf-vib-demo)")
    parser.add_argument("--units", type=int, default=128, help="baseline LSTM units (default 128)")
    parser.add_argument("--baseline-epochs", type=int, default=60, help="baseline training epochs")
    parser.add_argument("--epochs", type=int, default=None, help="VIB epochs (default: compress's)")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="fine-tuning epochs")
    parser.add_argument("--quick", action="store_true", help="a few epochs only: a smoke test")
    parser.set_defaults(run=run)
    return parser


def _line(text):
    print(f"[tf-vib demo] {text}", flush=True)


def _baseline(keras, data, units, epochs, seed, x_train, y_train, validation):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input(data.input_shape), keras.layers.LSTM(units), keras.layers.Dense(data.n_classes)],
        name=f"lstm{units}",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, validation_data=validation, epochs=epochs, batch_size=32, verbose=2)
    return model


def run(args):
    import converters
    import tf_vib
    from tf_vib import datasets
    from tf_vib._keras import keras
    from tf_vib.report import format_table

    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    _line(f"loading {args.dataset}")
    data = datasets.load(args.dataset)
    (x_train, y_train), (x_val, y_val) = data.split_validation(0.2, seed=args.seed)
    _line(f"{len(x_train)} training, {len(x_val)} validation, {len(data.x_test)} test sequences "
          f"of shape {data.input_shape}, {data.n_classes} classes")
    quick = args.quick
    baseline_epochs = 3 if quick else args.baseline_epochs
    _line(f"training the baseline LSTM({args.units}) for {baseline_epochs} epochs")
    baseline = _baseline(keras, data, args.units, baseline_epochs, args.seed, x_train, y_train,
                         (x_val, y_val))
    kwargs = {}
    if quick:
        kwargs.update(epochs=4, finetune_epochs=3)
    if args.epochs is not None:
        kwargs["epochs"] = args.epochs
    if args.finetune_epochs is not None:
        kwargs["finetune_epochs"] = args.finetune_epochs
    _line("compressing")
    result = tf_vib.compress(
        baseline, (x_train, y_train), validation_data=(x_val, y_val),
        test_data=(data.x_test, data.y_test), seed=args.seed, verbose=1, **kwargs,
    )
    print(result.report, flush=True)
    compressed = result.model
    compressed.save(out / "compressed.keras")

    _line("converting to TFLite and measuring (batch 1, one thread, median latency)")
    calibration = x_train[: min(len(x_train), 200)]
    rows, figures = [], {}
    for name, model in (("baseline", baseline), ("compressed", compressed)):
        for mode in DEMO_MODES:
            started = time.perf_counter()
            flat = converters.to_tflite(model, quantization=mode, representative_data=calibration)
            accuracy = converters.evaluate_tflite(flat, data.x_test, data.y_test)
            latency = converters.measure_latency(flat, data.x_test[:50])
            figures[(name, mode)] = {
                "params": int(model.count_params()),
                "bytes": len(flat),
                "test_accuracy": float(accuracy),
                "latency_us": float(latency * 1e6),
                "seconds": time.perf_counter() - started,
            }
            if name == "compressed":
                (out / f"compressed_{mode}.tflite").write_bytes(flat)
            rows.append((name, mode, f"{model.count_params():,}", f"{len(flat):,}",
                         f"{100 * accuracy:.2f}", f"{latency * 1e6:.1f}"))
    for mode in DEMO_MODES:
        b, c = figures[("baseline", mode)], figures[("compressed", mode)]
        rows.append(("ratio", mode, f"{b['params'] / c['params']:.1f}x", f"{b['bytes'] / c['bytes']:.1f}x",
                     f"{100 * (c['test_accuracy'] - b['test_accuracy']):+.2f}",
                     f"{b['latency_us'] / c['latency_us']:.1f}x"))
    table = format_table(("model", "TFLite", "params", "file bytes", "test acc %", "latency us"), rows)
    print(table, flush=True)

    result.report.to_json(out / "report.json")
    summary = {
        "dataset": args.dataset,
        "seed": args.seed,
        "tflite": {f"{n}/{m}": f for (n, m), f in figures.items()},
        "compression": result.report.to_dict()["compression"],
    }
    (out / "deployment.json").write_text(json.dumps(summary, indent=2) + "\n")
    result.report.plot(out / "accuracy_vs_size.png", title=f"tf-vib on {args.dataset}")
    _plot_files(figures, out / "tflite_size_accuracy.png", args.dataset)
    (out / "table.txt").write_text(table + "\n")
    _line(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}/")
    return 0


def _plot_files(figures, path, dataset):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (name, mode), f in figures.items():
        marker = "o" if name == "baseline" else "*"
        ax.scatter(f["bytes"], 100 * f["test_accuracy"], s=90, marker=marker, label=f"{name} {mode}")
    ax.set_xscale("log")
    ax.set_xlabel("TFLite file size (bytes)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{dataset}: TFLite files, baseline vs compressed")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
