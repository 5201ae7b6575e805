"""``tf-vib bench``: tf-vib against other compression methods, each at its best setting.

For each data set and seed (`tf_vib.bench.seed.run_seed`): one baseline ``LSTM(128) ->
Dense`` trained until validation stops improving, the baseline fine-tuned like every
method (the reference when it validates better), and every method's sweep
(`tf_vib.bench.methods`), each point cached with its commit and settings
(`tf_vib.bench.cache`), so that a rerun trains only what a change touches. The choices
are made on validation data (`tf_vib.bench.choice`); the chosen models are converted to
TFLite, verified and timed side by side. ``tf_vib.bench.report`` turns the per-seed JSON
into ``docs/benchmarks.md`` and its plots. ``--quick`` runs every sweep end to end on a
tiny budget (60 sequences, 1 epoch, the first and last sweep points, float32 files).
"""

import inspect
import json
import pathlib
import platform
import time

import numpy as np

from tf_vib.bench.common import LATENCY_TIMING
from tf_vib.bench.data import DATASETS, load
from tf_vib.bench.methods import METHODS

__all__ = ["run", "METHODS", "DATASETS", "vib_epoch_time", "latency_curve"]

#: The LSTM sizes whose latency `latency_curve` measures on each data set's input shape.
CURVE_UNITS = (4, 8, 12, 16, 20, 24, 32, 64, 128)


def _line(text):
    print(f"[tf-vib bench] {text}", flush=True)


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

    data = load(dataset, quick=quick)
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
                         mask_learning_rate=defaults["mask_learning_rate"])
    vib.compile(optimizer=keras.optimizers.Adam(defaults["learning_rate"]), loss=plain.loss, metrics=["accuracy"])
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

    data = load(dataset, quick=quick)
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
    from tf_vib.bench import report

    unknown = sorted(set(args.datasets) - set(DATASETS)) or sorted(set(args.methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"tf-vib bench: unknown name(s) {unknown}; data sets: {list(DATASETS)}, "
                         f"methods: {list(METHODS)}")
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2]
    results = pathlib.Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        from tf_vib.bench.cache import Cache
        from tf_vib.bench.seed import run_seed

        cache = Cache(results, keep_stale=args.keep_stale)
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
                record = run_seed(dataset, seed, args.methods, cache=cache, quick=args.quick, log=_line)
                record["environment"] = _environment()
                (results / f"{dataset}_seed{seed}.json").write_text(json.dumps(record, indent=1))
        paper = results / "paper_size_seed0.json"
        if args.paper_size and not paper.exists():
            from tf_vib.bench.paper import run_paper

            record = run_paper(results, seed=0, quick=args.quick, log=_line)
            record["environment"] = _environment()
            paper.write_text(json.dumps(record, indent=1))
    written = report.write_report(results, pathlib.Path(args.docs), command=_command(args))
    _line(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def _command(args):
    parts = ["tf-vib bench"]
    if sorted(args.datasets) != sorted(DATASETS):
        parts.append("--datasets " + " ".join(args.datasets))
    if args.seeds != ([0] if args.quick else [0, 1, 2]):
        parts.append("--seeds " + " ".join(map(str, args.seeds)))
    if args.paper_size:
        parts.append("--paper-size")
    if sorted(args.methods) != sorted(METHODS):
        parts.append("--methods " + " ".join(f"'{m}'" for m in args.methods))
    if args.quick:
        parts.append("--quick")
    return " ".join(parts)
