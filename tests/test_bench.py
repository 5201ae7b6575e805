"""tf-vib bench: aggregation over seeds, target checks, the report, and a quick end-to-end run."""

import dataclasses
import json
import re

import numpy as np
import pytest

from tf_vib.bench import aggregate, cache, choice, data, methods, report, runner
from tf_vib.bench import seed as bench_seed
from tf_vib.cli import main


def _files(bytes_, latency, accuracy=0.9, verified=True):
    return {mode: {"bytes": bytes_ // (4 if mode == "int8" else 1), "gzip_bytes": bytes_ // 2,
                   "tflite_accuracy": accuracy, "latency_us": latency, "verified": verified,
                   "verification": "", "ops": ""} for mode in ("float32", "int8")}


def _record(seed, vib_params, vib_accuracy):
    return {
        "dataset": "JapaneseVowels", "seed": seed, "quick": False, "input_shape": [29, 12],
        "n_train": 216, "n_val": 54, "n_test": 370,
        "runs": {
            "baseline": {"params": 73353, "lstm_params": 72192, "lstm_nonzero": 72192,
                         "keras_accuracy": 0.96, "seconds": 8.0, "files": _files(290000, 200.0)},
            "vib": {"params": vib_params + 90, "lstm_params": vib_params, "lstm_nonzero": vib_params,
                    "keras_accuracy": vib_accuracy, "seconds": 80.0, "files": _files(6000, 45.0),
                    "layers": [{"kind": "FeatureMask", "inputs_kept": 9, "inputs_total": 12}]},
            "lstm8 (scratch)": {"params": 761, "lstm_params": 672, "lstm_nonzero": 672,
                                "keras_accuracy": 0.93, "seconds": 9.0, "files": _files(5000, 40.0)},
        },
    }


def test_aggregate_means_ratios_and_spread():
    records = [_record(0, 1200, 0.96), _record(1, 1600, 0.95)]
    table = aggregate.aggregate(records)
    vib = table["vib"]
    assert vib["seeds"] == 2
    assert vib["lstm_params"][0] == pytest.approx(1400)
    assert vib["lstm_ratio"][0] == pytest.approx((72192 / 1200 + 72192 / 1600) / 2)
    assert vib["drop_points"] == pytest.approx((0.5, 0.5))
    assert vib["keras_accuracy"][1] == pytest.approx(0.005)
    assert vib["files"]["float32"]["speedup"][0] == pytest.approx(200 / 45)
    assert vib["files"]["int8"]["smaller_than_float32_baseline"][0] == pytest.approx(290000 / 1500)
    assert vib["inputs_kept"][0] == pytest.approx(0.75)
    assert table["baseline"]["inputs_kept"] is None


def test_targets_are_checked_against_the_numbers():
    met = dict((t, ok) for t, _, ok in aggregate.check_targets(
        {"JapaneseVowels": [_record(0, 1200, 0.96), _record(1, 1300, 0.955)]}))
    assert met["JapaneseVowels: >= 50x fewer LSTM parameters at <= 0.5 point mean drop"]
    assert met["JapaneseVowels: compressed float32 latency within 1.2x of the LSTM(8) floor"]
    missed = dict((t, ok) for t, _, ok in aggregate.check_targets(
        {"JapaneseVowels": [_record(0, 1200, 0.94)]}))  # a 2-point drop
    assert not missed["JapaneseVowels: >= 50x fewer LSTM parameters at <= 0.5 point mean drop"]
    # The int8 floor and the other data sets' floors are reported apart, as checks.
    runs = {"JapaneseVowels": [_record(0, 1200, 0.96)], "digits_rows": [_record(0, 1200, 0.96)]}
    assert not any("int8 latency" in t or "digits_rows: compressed float32 latency" in t
                   for t, _, _ in aggregate.check_targets(runs))
    further = {t: ok for t, _, ok in aggregate.further_checks(runs)}
    assert sorted(further) == ["JapaneseVowels: compressed int8 latency within 1.2x of the LSTM(8) floor",
                               "digits_rows: compressed float32 latency within 1.2x of the LSTM(8) floor",
                               "digits_rows: compressed int8 latency within 1.2x of the LSTM(8) floor"]


def test_report_is_written_from_the_json(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for seed in (0, 1, 2):
        record = _record(seed, 1200 + seed, 0.96)
        if seed:  # seed 1: compress() trimmed LSTM(13) to 12; seed 2: the trim to 8 was refused
            units = 12 if seed == 1 else 9
            record["runs"]["vib"]["layers"].append({"kind": "LSTM", "units_kept": units, "inputs_kept": 9})
            record["runs"]["vib"]["trim"] = {"layers": {"lstm": {"units": 13 if seed == 1 else 9,
                                                                 "trimmed_units": 12 if seed == 1 else 8}},
                                             "params": 900, "accuracy_before_tuning": 0.9,
                                             "fine_tuned_accuracy": 0.95, "target": 0.96,
                                             "accepted": seed == 1}
        (results / f"JapaneseVowels_seed{seed}.json").write_text(json.dumps(record))
    (results / "JapaneseVowels_epoch_time.json").write_text(
        json.dumps({"plain_epoch_s": 0.2, "vib_epoch_s": 0.28, "ratio": 1.4}))
    (results / "JapaneseVowels_latency_curve.json").write_text(json.dumps(
        {"units": [4, 8, 16], "input_shape": [29, 12], "float32_us": [18.0, 20.0, 27.0],
         "int8_us": [60.0, 70.0, 110.0]}))
    written = report.write_report(results, tmp_path / "docs", command="tf-vib bench")
    text = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "`tf-vib bench`" in text and "## JapaneseVowels" in text
    assert "| JapaneseVowels | 0.20 | 0.28 | 1.40x |" in text
    assert "| JapaneseVowels: a VIB training epoch <= 1.5x a plain LSTM epoch | 1.40x | yes |" in text
    assert "img/bench_JapaneseVowels.png" in text
    assert (tmp_path / "docs" / "img" / "bench_JapaneseVowels.png").stat().st_size > 1000
    # The floor section: each seed's compressed file against its LSTM(8), and the size curve.
    assert "| JapaneseVowels | 0 | ? | 45.0 | 40.0 | 1.12x | 45.0 | 40.0 | 1.12x | no |" in text
    assert "| JapaneseVowels | 1 | LSTM(12) on 9 of 12 inputs, trimmed from 13 | 45.0 |" in text
    assert ("| JapaneseVowels | 2 | LSTM(9) on 9 of 12 inputs, trim to 8 refused (95.00% validation, "
            "96.00% needed), 12 units in float files | 45.0 |") in text
    assert "| JapaneseVowels: compressed int8 latency within 1.2x of the LSTM(8) floor | 1.12x the floor | yes |" in text
    assert "| 16 | 27.0 | 1.35x | 110.0 | 1.57x |" in text
    assert "within 1.2x of `LSTM(8)`: JapaneseVowels: 8 units in float32, 8 in int8." in text
    assert "JapaneseVowels: timed before that change" in text  # the records carry no latency_timing
    assert (tmp_path / "docs" / "img" / "latency_curve.png").stat().st_size > 1000
    assert len(written) == 3


def test_latency_curve_times_one_file_per_size_and_mode():
    curve = runner.latency_curve("digits_rows", units=(4, 8), quick=True)
    assert curve["units"] == [4, 8] and curve["input_shape"] == [8, 8]
    assert len(curve["float32_us"]) == len(curve["int8_us"]) == 2
    assert all(0 < t < 1e5 for t in curve["float32_us"] + curve["int8_us"])
    assert curve["latency_timing"] == runner.LATENCY_TIMING


def test_vib_epoch_time_alternates_the_two_models():
    timing = runner.vib_epoch_time("JapaneseVowels", quick=True)
    assert timing["turns"] == 2
    assert 0 < timing["plain_epoch_s"] < 60 and 0 < timing["vib_epoch_s"] < 60
    assert 0.2 < timing["ratio"] < 20


def test_bench_rejects_unknown_names(tmp_path):
    with pytest.raises(SystemExit, match="unknown name"):
        main(["bench", "--datasets", "MNIST", "--results", str(tmp_path)])
    with pytest.raises(SystemExit, match="unknown name"):
        main(["bench", "--methods", "pruning", "--results", str(tmp_path)])


def _paper_record(vib_params, vib_accuracy, vib_latency):
    record = _record(0, vib_params, vib_accuracy)
    record["dataset"] = "paper_size"
    record["runs"]["baseline"].update(lstm_params=33562624, params=33576960,
                                      files=_files(134_000_000, 60000.0))
    record["runs"]["vib"]["files"] = _files(9000, vib_latency)
    return record


def test_paper_size_targets_are_checked_against_the_numbers():
    targets = {"paper-sized: >= 1000x fewer LSTM parameters, accuracy within 1 point",
               "paper-sized: >= 100x lower latency (float32 files)"}
    met = dict((t, ok) for t, _, ok in aggregate.check_targets({"paper_size": [_paper_record(2000, 0.955, 50.0)]}))
    assert {t for t in targets if met[t]} == targets
    missed = dict((t, ok) for t, _, ok in aggregate.check_targets(
        {"paper_size": [_paper_record(40000, 0.94, 900.0)]}))  # 839x, a 2-point drop, 67x faster
    assert not any(missed[t] for t in targets)


def test_batch_norm_recalibration_averages_the_batch_statistics():
    from tf_vib._keras import keras
    from tf_vib.bench.paper import _recalibrate_batch_norm

    norm = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Sequential([keras.Input((3,)), norm])
    frames = np.random.default_rng(0).normal(5.0, 2.0, (256, 3)).astype("float32")
    _recalibrate_batch_norm(model, frames, chunk=64, chunks=4)
    chunk_means = frames.reshape(4, 64, 3).mean(axis=1)
    np.testing.assert_allclose(norm.moving_mean.numpy(), chunk_means.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(),
                               frames.reshape(4, 64, 3).var(axis=1).mean(axis=0), rtol=1e-4)
    assert norm.momentum == 0.99, "the layer's own momentum is restored"


def test_pretraining_frames_are_single_frames_with_their_states():
    from tf_vib import datasets
    from tf_vib.bench.paper import ENCODER, pretraining_frames

    frames, states = pretraining_frames(6, seed=3)
    assert frames.shape == (6, ENCODER["size"], ENCODER["size"], 3)
    assert states.shape == (6, len(datasets.STATE_NAMES))
    again, _ = pretraining_frames(6, seed=3)
    assert np.array_equal(frames, again)


@pytest.mark.slow
def test_quick_paper_size_run_end_to_end(tmp_path):
    from tf_vib.bench.paper import run_paper

    record = run_paper(tmp_path, quick=True, log=lambda _: None)
    runs = record["runs"]
    assert record["input_shape"] == [8, 2048]
    assert runs["baseline"]["lstm_params"] == 4 * (64 * (2048 + 64) + 64)
    assert runs["vib"]["lstm_params"] <= runs["baseline"]["lstm_params"]
    for run in runs.values():
        assert set(run["files"]) == {"float32", "int8"}
        # Barely trained models on 56 clips: one int8 flip is 1.8 points, so only the
        # float32 files are held to their target here; the int8 files must run.
        assert run["files"]["float32"]["verified"], run["files"]["float32"]["verification"]
        assert 0.0 <= run["files"]["int8"]["tflite_accuracy"] <= 1.0
    assert (tmp_path / "paper" / "encoder_seed0.weights.h5").exists()


def test_file_table_names_the_modes_that_missed_verification():
    records = [_record(0, 1200, 0.96), _record(1, 1300, 0.96)]
    records[1]["runs"]["vib"]["files"]["int8"]["verified"] = False
    text = report._file_table(aggregate.aggregate(records))
    vib_row = next(line for line in text.splitlines() if line.startswith("vib "))
    assert vib_row.rstrip().endswith("missed: int8 1/2")
    assert next(line for line in text.splitlines() if line.startswith("baseline")).rstrip().endswith("yes")


def test_frame_groups_consecutive_samples_padding_in_front():
    x = np.arange(2 * 10, dtype=np.float32).reshape(2, 10, 1) + 1
    framed = data.frame(x, max_steps=4)  # 3 samples per step, 2 zeros in front
    assert framed.shape == (2, 4, 3)
    np.testing.assert_array_equal(framed[0], [[0, 0, 1], [2, 3, 4], [5, 6, 7], [8, 9, 10]])
    np.testing.assert_array_equal(framed[1, -1], [18, 19, 20])
    assert data.frame(x, max_steps=10) is x


def test_held_out_sets_are_framed_and_reserved_sets_refused():
    arrow = data.load("ArrowHead")
    assert arrow.x_train.shape == (36, 32, 8) and arrow.info["framed"] == {"steps": 251, "max_steps": 32}
    assert {"ArrowHead", "OSULeaf", "ACSF1"} == set(data.HELD_OUT) <= set(runner.DATASETS)
    assert not set(data.RESERVED) & set(runner.DATASETS)
    for name in data.RESERVED:
        with pytest.raises(ValueError, match=f"`name` {name!r} is reserved for independent checks"):
            data.load(name)


def _point(nonzero, val, test=0.5):
    return {"lstm_nonzero": nonzero, "val_accuracy": val, "keras_accuracy": test}


def test_choice_takes_the_smallest_point_within_the_bound_else_the_best_marked():
    sweep = [_point(900, 0.95), _point(300, 0.93), _point(100, 0.80), _point(300, 0.94)]
    assert choice.choose_point(sweep, 0.93) == (3, True)  # 300 twice: the better on validation
    assert choice.choose_point(sweep, 0.96) == (0, False)
    baseline = _point(1000, 0.95)
    assert choice.choose_reference(baseline, ("ref", _point(1000, 0.95))) == "baseline"  # a tie
    assert choice.choose_reference(baseline, ("ref", _point(1000, 0.96))) == "ref"
    picked = choice.choose_all(baseline, {"ref": [_point(1000, 0.96)], "m": sweep}, 0.02, "ref")
    assert picked == {"reference": "ref", "floor": pytest.approx(0.94),
                      "chosen": {"ref": {"index": 0, "met": True}, "m": {"index": 3, "met": True}}}


def test_choices_ignore_test_figures():
    rng = np.random.default_rng(0)
    sweeps = {"ref": [_point(1000, 0.96)], "m": [_point(int(n), v) for n, v in zip(
        rng.integers(10, 1000, 12), rng.uniform(0.8, 1.0, 12), strict=True)]}
    picked = choice.choose_all(_point(1000, 0.95), sweeps, 0.05, "ref")
    for points in sweeps.values():
        for p in points:
            p["keras_accuracy"] = rng.uniform()
    assert choice.choose_all(_point(1000, 0.95, test=0.1), sweeps, 0.05, "ref") == picked


def test_cache_is_reused_unless_the_settings_change(tmp_path, monkeypatch):
    from tf_vib.cli.demo import build_lstm

    calls = []

    def fake_point(settings, context, plan):  # a tiny model: the cache is under test, not training
        calls.append(settings)
        model = build_lstm(context["data"], units=2, seed=0)
        return model, {"bound_drop": 0.1} if "units" not in settings else {}

    monkeypatch.setattr(methods, "run_point", fake_point)
    store = cache.Cache(tmp_path)
    first = bench_seed.run_seed("digits_rows", 0, ["width (scratch)"], cache=store, quick=True, modes=(),
                          log=lambda _: None)
    assert len(calls) == 3  # the reference and LSTM(4), LSTM(8)
    again = bench_seed.run_seed("digits_rows", 0, ["width (scratch)"], cache=cache.Cache(tmp_path), quick=True,
                          modes=(), log=lambda _: None)
    assert len(calls) == 3 and again["sweeps"] == first["sweeps"] and again["runs"] == first["runs"]
    stamp = first["runs"]["width (scratch)"]["stamp"]
    assert stamp["commit"] == store.commit and stamp["settings"]["budget"]["scratch_epochs"] == 2
    plan = methods.budget(quick=True)
    monkeypatch.setattr(methods, "budget", lambda quick=False: {**plan, "scratch_epochs": 3})
    bench_seed.run_seed("digits_rows", 0, ["width (scratch)"], cache=cache.Cache(tmp_path), quick=True, modes=(),
                  log=lambda _: None)
    assert len(calls) == 6  # the budget changed: every point reran (the baseline's settings did not)
    store.code = "other code"
    assert store.get("digits_rows", 0, "baseline", stamp["settings"]) is None
    store.keep_stale = True
    assert store.get("digits_rows", 0, "width (scratch)", stamp["settings"])["point"] == "LSTM(4)"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The benchmark's quick mode, every method, one seed, and its report (deterministic ops,
    so that the shuffled-labels run can be compared with it figure for figure)."""
    import time

    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    folder = tmp_path_factory.mktemp("bench")
    started = time.perf_counter()
    record = bench_seed.run_seed("digits_rows", 0, list(runner.METHODS), cache=cache.Cache(folder / "results"),
                           quick=True, log=lambda _: None)
    record["seconds"] = time.perf_counter() - started
    (folder / "results" / "digits_rows_seed0.json").write_text(json.dumps(record))
    report.write_report(folder / "results", folder / "docs", command="tf-vib bench --quick")
    return folder, record


@pytest.mark.slow
def test_quick_mode_runs_every_sweep_end_to_end(quick_run):
    _, record = quick_run
    for method in runner.METHODS:
        assert [p["point"] for p in record["sweeps"][method]] == [label for label, _ in
                                                                  methods.points(method, quick=True)]
        assert all(p["stamp"]["settings"]["method"] == method for p in record["sweeps"][method])
    assert set(record["runs"]) == {"baseline", methods.FLOOR, *runner.METHODS}
    for name, run in record["runs"].items():
        assert run["files"]["float32"]["verified"], (name, run["files"]["float32"]["verification"])
    assert record["runs"][methods.FLOOR]["lstm_params"] == 4 * (8 * 8 + 8 * 8 + 8)
    assert record["reference"] in ("baseline", methods.REFERENCE)
    assert record["runs"]["magnitude"]["stamp"]["settings"]["budget"]["magnitude_epochs"] == 2


def _row(text, name):
    """The cells of the report's plain-text table row of ``name``."""
    line = next(line for line in text.splitlines() if re.match(rf"{re.escape(name)}\s{{2,}}", line))
    return re.split(r"\s{2,}", line.strip())


@pytest.mark.slow
def test_report_figures_equal_those_recomputed_from_the_json(quick_run):
    folder, _ = quick_run
    record = json.loads((folder / "results" / "digits_rows_seed0.json").read_text())
    text = (folder / "docs" / "benchmarks.md").read_text()
    reference = record["runs"][record["reference"]]
    for method in runner.METHODS:
        run = record["runs"][method]
        cells = _row(text, method)
        assert cells[1] == run["point"]
        assert cells[2] == f"{run['lstm_params']:,}"
        assert cells[3] == f"{record['runs']['baseline']['lstm_params'] / run['lstm_params']:.1f}x"
        assert cells[7] == f"{100 * run['val_accuracy']:.2f} ± 0.00"
        assert cells[8] == f"{100 * run['keras_accuracy']:.2f} ± 0.00"
        assert cells[9] == f"{100 * (reference['keras_accuracy'] - run['keras_accuracy']):.2f} ± 0.00"
        within = run["val_accuracy"] >= record["floor"] - 1e-12
        assert cells[10] == ("yes" if within else "**no**")
        assert cells[-2] == f"{sum(p['seconds'] for p in record['sweeps'][method]):,.0f}"
        assert cells[-1] == run["stamp"]["commit"]
    assert (folder / "docs" / "img" / "bench_digits_rows.png").stat().st_size > 1000
    table = text[text.index("Every sweep point"):].split("```")[1]
    rows = {tuple(cells[:2]): cells[2:] for cells in (re.split(r"\s{2,}", line.strip())
                                                       for line in table.strip().splitlines()[2:])}
    assert len(rows) == sum(len(points) for points in record["sweeps"].values())
    for method, points in record["sweeps"].items():
        for point in points:
            assert rows[method, point["point"]] == [
                f"{point['lstm_nonzero']:,}", f"{100 * point['val_accuracy']:.2f} ± 0.00",
                f"{100 * point['keras_accuracy']:.2f} ± 0.00", "1/1" if point["met"] else "0/1 *",
                f"{point['seconds']:,.0f}"]


@pytest.mark.slow
def test_no_choice_changes_when_the_test_labels_are_shuffled(quick_run, tmp_path, monkeypatch):
    _, record = quick_run
    load = data.load

    def shuffled(name, quick=False):
        loaded = load(name, quick=quick)
        labels = np.random.default_rng(5).permutation(loaded.y_test)
        return dataclasses.replace(loaded, y_test=labels)

    monkeypatch.setattr(data, "load", shuffled)
    names = ["vib", "iss", "width (scratch)"]
    other = bench_seed.run_seed("digits_rows", 0, names, cache=cache.Cache(tmp_path), quick=True, modes=(),
                          log=lambda _: None)
    assert other["reference"] == record["reference"] and other["floor"] == record["floor"]
    for method in [methods.REFERENCE, *names]:
        assert other["chosen"][method] == record["chosen"][method], method
        assert [p.get("threshold") for p in other["sweeps"][method]] == [
            p.get("threshold") for p in record["sweeps"][method]]
        # Every choice above is asserted equal. The validation accuracies behind them are
        # equal in most runs; in 2 of 5 runs of 2026-12-02 one quick-mode point differed by one
        # validation sample (0.25 vs 0.333 of 12) with ops deterministic, shuffled or not: a
        # nondeterminism not found yet (the closing note of that day), not a test label leaking.
        other_accuracy = [p["val_accuracy"] for p in other["sweeps"][method]]
        accuracy = [p["val_accuracy"] for p in record["sweeps"][method]]
        assert np.allclose(other_accuracy, accuracy, atol=1.0 / record["n_val"] + 1e-9), (method, other_accuracy,
                                                                                         accuracy)
