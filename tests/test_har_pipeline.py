"""benchmarks/har_pipeline.py's pieces (no training, no pi-run): the CNN and head files it
counts compose to the clip model, pi-run's output is read per runtime and file, and the
targets are judged from the counts."""

import importlib.util
import json
import pathlib
import stat

import numpy as np
import pytest

from tf_vib._keras import keras

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def har():
    return _load("har_pipeline")


def test_parts_compose_to_the_clip_model(har, rng):
    inner = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D()], name="cnn")
    clips = keras.Input((4, 6, 6, 2))
    h = keras.layers.TimeDistributed(inner, name="frames")(clips)
    h = keras.layers.LSTM(5)(h)
    model = keras.Model(clips, keras.layers.Dense(3)(h))
    cnn, head = har.parts(model)
    x = rng.normal(size=(2, 4, 6, 6, 2)).astype("float32")
    features = cnn(x.reshape(-1, 6, 6, 2)).numpy().reshape(2, 4, 3)
    np.testing.assert_allclose(head(features).numpy(), model(x).numpy(), atol=1e-6)
    assert cnn.count_params() + head.count_params() == model.count_params()


def test_pi_counts_reads_the_last_invoke_per_runtime_and_file(tmp_path):
    emulated_pi = _load("emulated_pi")
    fake = tmp_path / "pi-run"
    fake.write_text("#!/bin/sh\ncat <<'OUT'\n=== emulated cortex-a72, tflite_runtime\n"
                    "a.tflite: out#0 = [1]\nb.tflite: cannot load: op\n"
                    "instructions per invoke (loaded models, in order): [9, 7]\n"
                    "=== emulated cortex-a72, ai_edge_litert\na.tflite: out#0 = [1]\nb.tflite: out#0 = [2]\n"
                    "instructions per invoke (loaded models, in order): [5, 4, 30, 20]\nOUT\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    counts = emulated_pi.pi_counts(fake, ["a.tflite", "b.tflite"], ninv=2)
    assert counts == {"tflite-runtime-2.14": {"a.tflite": 7}, "ai-edge-litert": {"a.tflite": 4, "b.tflite": 20}}


def test_targets_from_counts(har):
    files = {label: {p: {"file": f"{label}_{p}"} for p in ("whole", "cnn", "head")}
             for label in ("baseline float32", "compressed float32", "compressed auto")}
    by_file = {"baseline float32_whole": 1000, "baseline float32_cnn": 110, "baseline float32_head": 100,
               "compressed float32_whole": 400, "compressed float32_cnn": 100, "compressed float32_head": 50,
               "compressed auto_whole": 240, "compressed auto_cnn": 60, "compressed auto_head": 40, "s": 100}
    kept = {"baseline float32": 8, "compressed float32": 3, "compressed auto": 3}
    costs = har.pipeline_costs(files, {"ai-edge-litert": by_file}, kept)
    assert costs["ai-edge-litert"]["baseline float32"]["cnn_per_clip"] == 880
    assert costs["ai-edge-litert"]["compressed auto"]["cnn_share"] == pytest.approx(180 / 220)
    result = {"accuracy": {"baseline": {"keras": 0.90, "tflite float32": 0.90},
                           "compressed": {"keras": 0.895, "tflite float32": 0.895, "tflite auto": 0.88}},
              "frames": {"kept": [0, 4, 7], "of": 8}, "instructions": costs,
              "raw_counts": {"ai-edge-litert": by_file},
              "streaming": {"float32": {"file": "s"}, "auto": {"error": "no file"}}}
    checks = har.targets(result)
    assert checks["frames"]["met"] and checks["frames"]["ratio"] == pytest.approx(8 / 3)
    auto = checks["pipeline"]["ai-edge-litert"]["compressed auto"]
    assert auto["ratio"] == pytest.approx(1000 / 240) and not auto["met"]  # 2 points lost
    float32 = checks["pipeline"]["ai-edge-litert"]["compressed float32"]
    assert float32["ratio"] == pytest.approx(1000 / 400) and not float32["met"]  # 2.5x only
    # the streaming file is judged against the whole-clip file of its own mode
    assert checks["streaming"]["ai-edge-litert"] == {"float32": {"per_invoke": 100, "ratio": pytest.approx(300 / 400),
                                                                 "met": True}}
    json.dumps(checks)
