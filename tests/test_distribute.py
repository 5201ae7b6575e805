"""compress() under tf.distribute, on logical CPU devices (docs/scaling.md): the GPU path is
the same code under a strategy. Each setting runs in a child process, since devices are fixed
once TensorFlow starts."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

import tf_vib

RUN = pathlib.Path(__file__).parent / "distributed" / "compress_run.py"
ROOT = pathlib.Path(__file__).resolve().parent.parent


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **extra)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
def test_mirrored_over_two_devices_matches_one_device(tmp_path):
    out = tmp_path / "local.json"
    subprocess.run([sys.executable, str(RUN), "local", str(out)], env=_env(), check=True, timeout=900,
                   capture_output=True)
    runs = json.loads(out.read_text())
    assert runs["single"]["replicas"] == 1 and runs["mirrored"]["replicas"] == runs["in_scope"]["replicas"] == 2
    # the same structure, and validation accuracy within one of the 32 validation samples
    # (the replicas draw their own mask noise, so the runs are not bit-identical)
    for name in ("mirrored", "in_scope"):
        assert runs[name]["units"] == runs["single"]["units"], runs
        assert abs(runs[name]["val_score"] - runs["single"]["val_score"]) <= 1 / 32 + 1e-9, runs
    streamed = runs["streamed"]
    assert streamed["replicas"] == 2 and streamed["baseline"] == pytest.approx(streamed["expected_baseline"]), runs


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_on_localhost_agree(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            [sys.executable, str(RUN), "worker", str(tmp_path / f"worker{index}.json")],
            env=_env(TF_CONFIG=json.dumps(config)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    try:
        codes = [p.wait(timeout=900) for p in processes]
    finally:
        for p in processes:
            p.kill()
    assert codes == [0, 0], [p.stderr.read().decode()[-2000:] for p in processes]
    results = [json.loads((tmp_path / f"worker{i}.json").read_text())["worker"] for i in range(2)]
    assert results[0] == results[1] and results[0]["replicas"] == 2


def test_a_strategy_that_is_not_one_is_refused_before_training():
    import numpy as np

    from tf_vib._keras import keras

    model = keras.Sequential([keras.Input((3, 2)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = np.zeros((20, 3, 2), "float32"), np.arange(20) % 2
    with pytest.raises(TypeError, match=r"`strategy` must be None or a tf.distribute.Strategy .*received 'mirrored'"):
        tf_vib.compress(model, (x, y), strategy="mirrored", verbose=0)
