"""Every method's sweep on one (data set, seed), each point cached; the choices; the files.

One split per seed: a stratified 80/20 validation split of the training set; the test set
is only measured. The baseline ``LSTM(128) -> Dense`` trains until its validation accuracy
stops improving (`methods.budget`'s patience, best epoch restored); every method starts from
it. The chosen point of each method, the baseline, the reference and the LSTM(8) floor are
converted to TFLite, verified, and timed side by side in this process.
"""

import time

from tf_vib.bench import choice, methods
from tf_vib.bench.common import LATENCY_TIMING, add_files, model_record

__all__ = ["run_seed", "FULL_MODES", "QUICK_MODES"]

FULL_MODES = ("float32", "dynamic", "float16", "int8")
QUICK_MODES = ("float32",)


def _baseline(cache, context, plan, log):
    """The baseline (from the cache when its settings and code are unchanged): ``(model, record)``."""
    from tf_vib.bench.common import train
    from tf_vib.cli.demo import build_lstm

    data, seed = context["data"], context["seed"]
    settings = {"data": context["data_key"], "units": plan["baseline_units"],
                "max_epochs": plan["baseline_max_epochs"], "patience": plan["patience"]}
    model = build_lstm(data, units=plan["baseline_units"], seed=seed)
    record = cache.get(context["dataset"], seed, "baseline", settings)
    if record is not None:
        model.set_weights(cache.model(context["dataset"], seed, "baseline", settings).get_weights())
        return model, record
    log(f"{context['dataset']} seed {seed}: baseline LSTM({plan['baseline_units']}) until validation stops "
        f"improving ({plan['patience']} epochs' patience) on {len(context['train'][0])} sequences")
    started = time.perf_counter()
    info = train(model, context["train"], context["val"], epochs=plan["baseline_max_epochs"],
                 patience=plan["patience"])
    record = model_record(model, context["test"], time.perf_counter() - started, val=context["val"], **info)
    return model, cache.put(context["dataset"], seed, "baseline", settings, record, model)


def _sweep(cache, context, plan, method, baseline_key, log):
    """``[(point settings, record)]`` of ``method``'s sweep, each point from the cache or run."""
    done = []
    for label, point in methods.points(method, context["quick"]):
        settings = {"method": method, "point": label, "settings": point, "baseline": baseline_key,
                    "budget": plan}
        record = cache.get(context["dataset"], context["seed"], method, settings)
        if record is None:
            log(f"{context['dataset']} seed {context['seed']}: {method}, {label}")
            started = time.perf_counter()
            model, extra = methods.run_point(point, context, plan)
            record = model_record(model, context["test"], time.perf_counter() - started, val=context["val"],
                                  point=label, **extra)
            record = cache.put(context["dataset"], context["seed"], method, settings, record, model)
            context["models"][record["stamp"]["key"]] = model
        done.append((settings, record))
    return done


def _files(cache, context, chosen, modes, log):
    """``{name: {mode: file figures}}`` of the ``chosen`` ``{name: (cache name, settings, record)}``."""
    from tf_vib.cli.deploy import convert_and_measure

    dataset, seed = context["dataset"], context["seed"]
    settings = {"models": {name: record["stamp"]["key"] for name, (_, _, record) in chosen.items()},
                "modes": list(modes), "timing": LATENCY_TIMING}
    cached = cache.get(dataset, seed, "files", settings)
    if cached is not None:
        return cached["files"]
    models = {name: context["models"].get(record["stamp"]["key"]) or cache.model(dataset, seed, where, point)
              for name, (where, point, record) in chosen.items()}
    train, test = context["train"], context["test"]
    figures, _ = convert_and_measure(models, modes, train[0][:300], *test, repeats=5, rounds=3,
                                     latency_samples=30, log=log)
    runs = {name: {} for name in models}
    add_files(runs, figures)
    return cache.put(dataset, seed, "files", settings, {"files": {n: r["files"] for n, r in runs.items()}})["files"]


def run_seed(dataset, seed, method_names, *, cache, quick=False, modes=None, log=print):
    """Every method of ``method_names`` on one (data set, seed): a JSON-ready dict.

    ``modes``: the TFLite modes the chosen models are converted to (default: all four, or
    float32 in quick mode; ``()``: none, the records then hold no files).
    """
    from tf_vib.bench import data as bench_data

    data = bench_data.load(dataset, quick=quick)
    train, val = data.split_validation(0.2, seed=seed)
    plan = methods.budget(quick)
    context = {"dataset": dataset, "seed": seed, "quick": quick, "data": data, "train": train, "val": val,
               "test": (data.x_test, data.y_test), "models": {},
               "data_key": {"name": dataset, "quick": quick, "shape": list(data.x_train.shape),
                            "framed": data.info.get("framed"), "split": {"fraction": 0.2, "seed": seed}}}
    baseline, base_record = _baseline(cache, context, plan, log)
    context["baseline"] = baseline
    context["models"][base_record["stamp"]["key"]] = baseline
    names = [methods.REFERENCE, *(m for m in method_names if m != methods.REFERENCE)]
    sweeps = {m: _sweep(cache, context, plan, m, base_record["stamp"]["key"], log) for m in names}
    records = {m: [r for _, r in sweep] for m, sweep in sweeps.items()}
    drop = records[methods.REFERENCE][0]["bound_drop"]
    choices = choice.choose_all(base_record, records, drop, methods.REFERENCE)
    chosen = {"baseline": ("baseline", base_record["stamp"]["settings"], base_record)}
    for method, sweep in sweeps.items():
        settings, record = sweep[choices["chosen"][method]["index"]]
        chosen[method] = (method, settings, record)
    floor = next(((m, s, r) for m, sweep in sweeps.items() if m == "width (scratch)" for s, r in sweep
                  if s["settings"]["units"] == 8), None)
    if floor:
        chosen[methods.FLOOR] = floor
    modes = (QUICK_MODES if quick else FULL_MODES) if modes is None else tuple(modes)
    files = _files(cache, context, chosen, modes, log) if modes else {}
    runs = {name: {**record, "files": files.get(name, {})} for name, (_, _, record) in chosen.items()}
    for method, pick in choices["chosen"].items():
        runs[method]["bound_met"] = pick["met"]
    return {"dataset": dataset, "seed": seed, "quick": quick, "input_shape": list(data.input_shape),
            "n_train": len(train[0]), "n_val": len(val[0]), "n_test": len(data.y_test),
            "framed": data.info.get("framed"), "budget": plan, "bound_drop": drop,
            "reference": choices["reference"], "floor": choices["floor"], "runs": runs,
            "sweeps": {m: [{**r, "met": r["val_accuracy"] >= choices["floor"] - 1e-12} for r in rs]
                       for m, rs in records.items()},
            "chosen": choices["chosen"], "latency_timing": LATENCY_TIMING}
