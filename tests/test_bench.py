"""tf-vib bench: aggregation over seeds, target checks, the report, and a quick end-to-end run."""

import json

import pytest

from tf_vib.cli import bench, bench_report, main


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
    table = bench_report.aggregate(records)
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
    met = dict((t, ok) for t, _, ok in bench_report.check_targets(
        {"JapaneseVowels": [_record(0, 1200, 0.96), _record(1, 1300, 0.955)]}))
    assert met["JapaneseVowels: >= 50x fewer LSTM parameters at <= 0.5 point mean drop"]
    assert met["JapaneseVowels: compressed float32 latency within 1.2x of the LSTM(8) floor"]
    missed = dict((t, ok) for t, _, ok in bench_report.check_targets(
        {"JapaneseVowels": [_record(0, 1200, 0.94)]}))  # a 2-point drop
    assert not missed["JapaneseVowels: >= 50x fewer LSTM parameters at <= 0.5 point mean drop"]


def test_report_is_written_from_the_json(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for seed in (0, 1):
        (results / f"JapaneseVowels_seed{seed}.json").write_text(json.dumps(_record(seed, 1200 + seed, 0.96)))
    (results / "JapaneseVowels_epoch_time.json").write_text(
        json.dumps({"plain_epoch_s": 0.2, "vib_epoch_s": 0.28, "ratio": 1.4}))
    written = bench_report.write_report(results, tmp_path / "docs", command="tf-vib bench")
    text = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "`tf-vib bench`" in text and "## JapaneseVowels" in text
    assert "| JapaneseVowels | 0.20 | 0.28 | 1.40x |" in text
    assert "img/bench_JapaneseVowels.png" in text
    assert (tmp_path / "docs" / "img" / "bench_JapaneseVowels.png").stat().st_size > 1000
    assert len(written) == 2


def test_bench_rejects_unknown_names(tmp_path):
    with pytest.raises(SystemExit, match="unknown name"):
        main(["bench", "--datasets", "MNIST", "--results", str(tmp_path)])
    with pytest.raises(SystemExit, match="unknown name"):
        main(["bench", "--methods", "pruning", "--results", str(tmp_path)])


@pytest.mark.slow
def test_quick_bench_end_to_end(tmp_path):
    record = bench.run_one("digits_rows", 0, ["vib", "lstm8 (scratch)"], quick=True, log=lambda _: None)
    runs = record["runs"]
    assert set(runs) == {"baseline", "vib", "lstm8 (scratch)"}
    for run in runs.values():
        assert set(run["files"]) == set(bench.MODES)
        assert all(f["verified"] for f in run["files"].values())
    assert runs["lstm8 (scratch)"]["lstm_params"] == 4 * (8 * 8 + 8 * 8 + 8)
    assert runs["vib"]["lstm_params"] <= runs["baseline"]["lstm_params"]
