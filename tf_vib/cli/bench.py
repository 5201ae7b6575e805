"""``tf-vib bench``: tf-vib against other compression methods, side by side in one run.

For each data set and seed: one baseline ``LSTM(128) -> Dense`` on one split, then every
method compresses that same baseline (``tf_vib.compress`` with the method's stages, the
same fine-tuning budget), an ``LSTM(8)`` trained from scratch gives the latency floor,
every model is converted to float32, dynamic-range, float16 and int8 TFLite, verified,
and all files are timed side by side in this process. Each (data set, seed) is saved
as JSON as soon as it is done, so an interrupted run resumes where it stopped;
``tf_vib.cli.bench_report`` turns the JSON into ``docs/benchmarks.md`` and its plots.
"""

import dataclasses
import inspect
import json
import pathlib
import platform
import time

import numpy as np

__all__ = ["add_command", "run", "METHODS", "DATASETS", "run_one", "vib_epoch_time"]

MODES = ("float32", "dynamic", "float16", "int8")
#: How the files of a run were timed (recorded in each result, quoted by the report).
LATENCY_TIMING = "interleaved per sample"
#: The LSTM sizes whose latency `latency_curve` measures on each data set's input shape.
CURVE_UNITS = (4, 8, 12, 16, 20, 24, 32, 64, 128)
ISS_STRENGTH = 1e-3

#: method name -> keyword arguments of ``tf_vib.compress`` (None: trained from scratch).
METHODS = {
    "vib": {},
    "vib+iss": {"iss": ISS_STRENGTH},
    "iss": {"vib": False, "iss": ISS_STRENGTH},
    **{f"magnitude {s:g}": {"vib": False, "magnitude_sparsity": s} for s in (0.5, 0.8, 0.9, 0.95, 0.98)},
    "low-rank": {"vib": False, "low_rank": 0.9},
    "vib+magnitude+cluster": {"magnitude_sparsity": 0.5, "clusters": 16},
    "lstm8 (scratch)": None,
}


def _synthetic_pixels():
    from tf_vib import datasets

    data = datasets.synthetic_actions(40, frames=8, size=32)
    flat = lambda x: x.reshape(len(x), x.shape[1], -1)  # noqa: E731  (8 frames of 3072 pixels)
    return dataclasses.replace(data, x_train=flat(data.x_train), x_test=flat(data.x_test))


def _load(name):
    from tf_vib import datasets

    return _synthetic_pixels() if name == "synthetic_actions" else datasets.load(name)


DATASETS = ("JapaneseVowels", "digits_rows", "synthetic_actions")


def add_command(commands):
    parser = commands.add_parser(
        "bench", help="compare tf-vib with ISS, tfmot pruning, low rank, clustering (writes docs/)",
        description=__doc__,
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), help="data sets to run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help="methods to run")
    parser.add_argument("--results", default="benchmarks/results", help="folder of per-run JSON")
    parser.add_argument("--docs", default="docs", help="where benchmarks.md and its plots go")
    parser.add_argument("--paper-size", action="store_true",
                        help="also the paper's setting: LSTM(2048) on 2048-d CNN features of 8 frames")
    parser.add_argument("--quick", action="store_true", help="a few epochs: a smoke test of the pipeline")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report from the JSON")
    parser.set_defaults(run=run)
    return parser


def _line(text):
    print(f"[tf-vib bench] {text}", flush=True)


def _lstm_stats(model):
    from tf_vib._keras import keras

    dense = nonzero = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.RNN):
            for w in layer.get_weights():
                dense += w.size
                nonzero += int(np.count_nonzero(w))
    return dense, nonzero


def _record(model, test, seconds, **extra):
    from tf_vib.cli.deploy import accuracy

    dense, nonzero = _lstm_stats(model)
    return {"params": int(model.count_params()), "lstm_params": dense, "lstm_nonzero": nonzero,
            "keras_accuracy": accuracy(model, *test), "seconds": float(seconds), **extra}


def _add_files(runs, figures):
    """Each converted file's figures into ``runs[model]["files"][mode]``."""
    for f in figures:
        runs[f.model].setdefault("files", {})[f.mode] = {
            "bytes": f.file_bytes, "gzip_bytes": f.gzip_bytes, "tflite_accuracy": f.tflite_accuracy,
            "latency_us": f.latency_us, "verified": f.verified, "verification": f.verification, "ops": f.ops,
        }


def _scratch(data, train, val, *, units, epochs, seed):
    from tf_vib.cli.demo import build_lstm
    from tf_vib.compress._training import BestWeights

    model = build_lstm(data, units=units, seed=seed)
    keep = BestWeights(lambda e, logs: (logs.get("val_accuracy", 0.0), -logs.get("val_loss", 0.0)))
    model.fit(*train, validation_data=val, epochs=epochs, batch_size=32, verbose=0, callbacks=[keep])
    return model


def run_one(dataset, seed, methods, *, quick=False, log=_line):
    """Every method on one (data set, seed): a JSON-ready dict."""
    from tf_vib import compress
    from tf_vib.cli.demo import train_baseline
    from tf_vib.cli.deploy import convert_and_measure

    data = _load(dataset)
    train, val = data.split_validation(0.2, seed=seed)
    test = (data.x_test, data.y_test)
    epochs = {"baseline": 3, "compress": {"epochs": 3, "finetune_epochs": 2}, "scratch": 3} if quick else {
        "baseline": 60, "compress": {}, "scratch": 100}
    log(f"{dataset} seed {seed}: baseline LSTM(128) on {len(train[0])} training sequences")
    started = time.perf_counter()
    baseline = train_baseline(data, *train, val, units=128, epochs=epochs["baseline"], seed=seed, verbose=0)
    models = {"baseline": baseline}
    runs = {"baseline": _record(baseline, test, time.perf_counter() - started)}
    for method in methods:
        started = time.perf_counter()
        if METHODS[method] is None:
            log(f"{dataset} seed {seed}: {method}")
            model = _scratch(data, train, val, units=8, epochs=epochs["scratch"], seed=seed)
            extra = {}
        else:
            log(f"{dataset} seed {seed}: {method} (compress{METHODS[method] or ' defaults'})")
            result = compress(baseline, train, validation_data=val, test_data=test, seed=seed, verbose=0,
                              **METHODS[method], **epochs["compress"])
            model = result.model
            extra = {"threshold": result.threshold, "layers": result.report.layers,
                     "stages": [dataclasses.asdict(s) for s in result.report.stages],
                     "trim": result.report.trim}
        models[method] = model
        runs[method] = _record(model, test, time.perf_counter() - started, **extra)
        log(f"  {runs[method]['lstm_params']:,} LSTM parameters ({runs[method]['lstm_nonzero']:,} nonzero), "
            f"test accuracy {100 * runs[method]['keras_accuracy']:.2f}%")
    figures, _ = convert_and_measure(models, MODES, train[0][:300], *test, repeats=5, rounds=3,
                                     latency_samples=30, log=log)
    _add_files(runs, figures)
    return {"dataset": dataset, "seed": seed, "quick": quick, "input_shape": list(data.input_shape),
            "n_train": len(train[0]), "n_val": len(val[0]), "n_test": len(test[0]), "runs": runs,
            "latency_timing": LATENCY_TIMING}


def vib_epoch_time(dataset, *, epochs=8, quick=False):
    """Seconds per epoch of plain LSTM(128) training and of its VIB copy, same data and batch.

    The two models train in turns, one epoch each (the order alternating), after one
    untimed epoch each that traces their graphs: a drift of the machine's speed then falls
    on both alike. The ratio is the median of the per-turn ratios.
    """
    from tf_vib._keras import keras
    from tf_vib.cli.demo import train_baseline
    from tf_vib.compress._core import compress, masked_width
    from tf_vib.compress._defaults import STATE_GATES, default_kl_factor
    from tf_vib.compress._schedules import VIBSchedule, VIBScheduleCallback
    from tf_vib.compress._training import TwoRateTrainer
    from tf_vib.wrap import add_vib_masks

    data = _load(dataset)
    train, val = data.split_validation(0.2, seed=0)
    epochs = 2 if quick else epochs

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.started

    plain = train_baseline(data, *train, val, units=128, epochs=1, seed=0, verbose=0)
    # What compress() trains by default: its gates, rates and KL schedule.
    defaults = {k: v.default for k, v in inspect.signature(compress).parameters.items()}
    kl_factor = default_kl_factor(len(train[0]), masked_width(plain))
    vib = TwoRateTrainer(add_vib_masks(plain, kl_factor=kl_factor, masked_gates=STATE_GATES,
                                       hidden_kl_mult=defaults["hidden_kl_mult"]),
                         learning_rate=defaults["learning_rate"],
                         mask_learning_rate=defaults["mask_learning_rate"])
    vib.compile(optimizer=keras.optimizers.Adam(1e-3), loss=plain.loss, metrics=["accuracy"])
    steps = -(-len(train[0]) // 32)
    schedule = VIBScheduleCallback(VIBSchedule(kl_factor, warmup_steps=2 * steps))
    models = {"plain": (plain, []), "vib": (vib, [schedule])}

    def epoch(name):
        model, callbacks = models[name]
        timer = Timer()
        model.fit(*train, epochs=1, batch_size=32, verbose=0, callbacks=[timer, *callbacks])
        return timer.seconds

    epoch("plain"), epoch("vib")  # untimed: the first epoch traces the graph
    times = {"plain": [], "vib": []}
    for turn in range(epochs):
        for name in ("plain", "vib") if turn % 2 == 0 else ("vib", "plain"):
            times[name].append(epoch(name))
    ratios = np.asarray(times["vib"]) / np.asarray(times["plain"])
    return {"plain_epoch_s": float(np.median(times["plain"])), "vib_epoch_s": float(np.median(times["vib"])),
            "ratio": float(np.median(ratios)), "turns": epochs}


def latency_curve(dataset, *, units=CURVE_UNITS, quick=False):
    """Latency of ``LSTM(u) -> Dense`` files against ``u`` on the data set's input shape.

    Weights are random (the fused op's time does not depend on their values); every
    float32 and int8 file is timed side by side on the same test samples. Shows what a
    compressed model of a given size can cost, next to the LSTM(8) floor.
    """
    import converters
    from tf_vib._keras import keras

    data = _load(dataset)
    keras.utils.set_random_seed(0)
    files = {}
    for size in units:
        model = keras.Sequential([keras.Input(data.input_shape), keras.layers.LSTM(size),
                                  keras.layers.Dense(data.n_classes)])
        converted = converters.to_tflite_many(model, ("float32", "int8"), representative_data=data.x_train[:200])
        files.update({(size, mode): flat for mode, flat in converted.items()})
    latency = converters.compare_latency(files, data.x_test[: 10 if quick else 30], repeats=5, rounds=3)
    return {"units": list(units), "input_shape": list(data.input_shape), "latency_timing": LATENCY_TIMING,
            **{f"{mode}_us": [latency[(size, mode)].median_us for size in units] for mode in ("float32", "int8")}}


def _environment():
    import tensorflow as tf

    import tf_vib

    try:
        import ai_edge_litert

        litert = getattr(ai_edge_litert, "__version__", "?")
    except ImportError:
        litert = "not installed"
    return {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
            "tensorflow": tf.__version__, "tf_vib": tf_vib.__version__, "ai_edge_litert": litert,
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}"}


def run(args):
    from tf_vib.cli import bench_report

    unknown = sorted(set(args.datasets) - set(DATASETS)) or sorted(set(args.methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"tf-vib bench: unknown name(s) {unknown}; data sets: {list(DATASETS)}, "
                         f"methods: {list(METHODS)}")
    results = pathlib.Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for dataset in args.datasets:
            timing = results / f"{dataset}_epoch_time.json"
            if not timing.exists():
                _line(f"{dataset}: VIB epoch time against plain LSTM epochs")
                timing.write_text(json.dumps(vib_epoch_time(dataset, quick=args.quick), indent=1))
            curve = results / f"{dataset}_latency_curve.json"
            if not curve.exists():
                _line(f"{dataset}: latency of LSTM(u) files for u in {list(CURVE_UNITS)}")
                curve.write_text(json.dumps(latency_curve(dataset, quick=args.quick), indent=1))
            for seed in args.seeds:
                path = results / f"{dataset}_seed{seed}.json"
                if path.exists():
                    _line(f"{dataset} seed {seed}: done before ({path}), skipped")
                    continue
                record = run_one(dataset, seed, args.methods, quick=args.quick)
                record["environment"] = _environment()
                path.write_text(json.dumps(record, indent=1))
        paper = results / "paper_size_seed0.json"
        if args.paper_size and not paper.exists():
            from tf_vib.cli.bench_paper import run_paper

            record = run_paper(results, seed=0, quick=args.quick, log=_line)
            record["environment"] = _environment()
            paper.write_text(json.dumps(record, indent=1))
    written = bench_report.write_report(results, pathlib.Path(args.docs), command=_command(args))
    _line(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def _command(args):
    parts = ["tf-vib bench"]
    if sorted(args.datasets) != sorted(DATASETS):
        parts.append("--datasets " + " ".join(args.datasets))
    if args.seeds != [0, 1, 2]:
        parts.append("--seeds " + " ".join(map(str, args.seeds)))
    if args.paper_size:
        parts.append("--paper-size")
    if args.quick:
        parts.append("--quick")
    return " ".join(parts)
