"""``tf-vib demo``: the whole story on an offline data set in a few minutes.

Train a baseline LSTM, compress it with ``tf_vib.compress``, convert both models to
TFLite (float32, dynamic-range and full int8), verify and time the files side by side,
and print one table with the ratios. The output folder gets the compressed model and
files, the test inputs for the Raspberry Pi runner, the report JSON and two plots.
"""

import dataclasses
import json
import pathlib
import time

import numpy as np

__all__ = ["add_command", "run", "DEMO_MODES", "build_lstm", "train_baseline"]

DEMO_MODES = ("float32", "dynamic", "int8")


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
    parser.add_argument("--baseline-epochs", type=int, default=60, help="baseline training epochs (default 60)")
    parser.add_argument("--epochs", type=int, default=None, help="VIB epochs (default: compress's)")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="fine-tuning epochs (default: compress's)")
    parser.add_argument("--quick", action="store_true", help="a few epochs only: a smoke test of the pipeline")
    parser.set_defaults(run=run)
    return parser


def _line(text):
    print(f"[tf-vib demo] {text}", flush=True)


def build_lstm(data, *, units, seed):
    """``LSTM(units) -> Dense(classes)`` compiled with Adam 1e-3 and cross-entropy on logits."""
    from tf_vib._keras import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input(data.input_shape), keras.layers.LSTM(units), keras.layers.Dense(data.n_classes)],
        name=f"lstm{units}",
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def train_baseline(data, x_train, y_train, validation, *, units, epochs, seed, verbose=2):
    """The baseline: `build_lstm` trained for ``epochs`` with batch 32 (the last epoch kept)."""
    model = build_lstm(data, units=units, seed=seed)
    model.fit(x_train, y_train, validation_data=validation, epochs=epochs, batch_size=32, verbose=verbose)
    return model


def _check_args(args):
    for name in ("units", "baseline_epochs"):
        if getattr(args, name) < 1:
            raise SystemExit(f"tf-vib demo: --{name.replace('_', '-')} must be >= 1; received {getattr(args, name)}")
    for name in ("epochs", "finetune_epochs"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise SystemExit(f"tf-vib demo: --{name.replace('_', '-')} must be >= 0; received {value}")


def run(args):
    import tf_vib
    from tf_vib import datasets
    from tf_vib.cli.deploy import convert_and_measure, files_table, ratio_rows

    _check_args(args)
    started = time.perf_counter()
    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    _line(f"loading {args.dataset}")
    data = datasets.load(args.dataset)
    (x_train, y_train), (x_val, y_val) = data.split_validation(0.2, seed=args.seed)
    _line(f"{len(x_train)} training, {len(x_val)} validation, {len(data.x_test)} test sequences "
          f"of shape {data.input_shape}, {data.n_classes} classes")
    baseline_epochs = 3 if args.quick else args.baseline_epochs
    _line(f"step 1/4: training the baseline LSTM({args.units}) for {baseline_epochs} epochs")
    baseline = train_baseline(data, x_train, y_train, (x_val, y_val), units=args.units,
                              epochs=baseline_epochs, seed=args.seed)
    kwargs = {"epochs": 4, "finetune_epochs": 3} if args.quick else {}
    kwargs.update({k: v for k, v in (("epochs", args.epochs), ("finetune_epochs", args.finetune_epochs))
                   if v is not None})
    _line("step 2/4: compressing with tf_vib.compress")
    result = tf_vib.compress(baseline, (x_train, y_train), validation_data=(x_val, y_val),
                             test_data=(data.x_test, data.y_test), seed=args.seed, verbose=1, **kwargs)
    print(result.report, flush=True)
    compressed = result.model
    compressed.save(out / "compressed.keras")
    _line(f"step 3/4: converting both models to TFLite ({', '.join(DEMO_MODES)}) and verifying them")
    figures, files = convert_and_measure(
        {"baseline": baseline, "compressed": compressed}, DEMO_MODES, x_train[:300],
        data.x_test, data.y_test, log=_line,
    )
    for (name, mode), flat in files.items():
        (out / f"{name}_{mode}.tflite").write_bytes(flat)
    np.savez(out / "test_inputs.npz", x=data.x_test, y=data.y_test)
    _line("step 4/4: results (latency: batch 1, one thread, median, all files timed side by side)")
    table = files_table(figures, ratio_rows(figures, "baseline", "compressed"))
    print(table, flush=True)
    (out / "table.txt").write_text(table + "\n")
    deployment = {
        "dataset": args.dataset, "seed": args.seed, "quick": bool(args.quick),
        "seconds": time.perf_counter() - started, "threshold": result.threshold,
        "files": [dataclasses.asdict(f) for f in figures],
        "compression": result.report.to_dict(),
    }
    (out / "report.json").write_text(json.dumps(deployment, indent=2) + "\n")
    result.report.plot(out / "accuracy_vs_size.png", title=f"tf-vib on {args.dataset}")
    _plot_files(figures, out / "tflite_files.png", args.dataset)
    _line(f"done in {time.perf_counter() - started:.0f} s; wrote {len(list(out.iterdir()))} files to {out}/")
    _line("on a Raspberry Pi: python tflite_runner.py compressed_int8.tflite test_inputs.npz "
          "(runner: examples/raspberry_pi/)")
    for f in figures:
        if not f.verified:
            _line(f"{f.model} {f.mode} file misses its verification target: {f.verification}")
    # The demo delivers the compressed files: they decide the exit status. A baseline file
    # that misses its target (a dynamic-range LSTM(128) file can: docs/deployment.md,
    # "Verification targets") is reported above, not hidden.
    return 0 if all(f.verified for f in figures if f.model == "compressed") else 1


def _plot_files(figures, path, dataset):
    from tf_vib._plots import figure

    with figure(path, xlabel="TFLite file size (bytes)", ylabel="test accuracy of the file (%)",
                title=f"{dataset}: TFLite files, baseline vs compressed") as (_, ax):
        for f in figures:
            marker = "o" if f.model == "baseline" else "*"
            ax.scatter(f.file_bytes, 100 * f.tflite_accuracy, s=90, marker=marker, label=f"{f.model} {f.mode}")
        ax.set_xscale("log")
    return path
