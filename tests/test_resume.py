"""compress(checkpoint_dir=...): a run SIGKILLed during the VIB stage, and during a candidate's
fine-tune, resumes (its log says from where) and ends with the uninterrupted run's structure
and validation accuracy within one sample; a rerun with another argument or model is refused.
Each run is a child process (tests/distributed/resume_run.py)."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

import tf_vib
from tf_vib._checks import BadArgument

RUN = pathlib.Path(__file__).parent / "distributed" / "resume_run.py"
ROOT = pathlib.Path(__file__).resolve().parent.parent


def _start(out, checkpoint_dir, extra=None, slow=None, mirrored=False):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if slow:
        env["RESUME_SLOW"] = str(slow)
    if mirrored:  # under a MirroredStrategy over 2 logical CPUs
        env["RESUME_MIRRORED"] = "1"
    return subprocess.Popen([sys.executable, str(RUN), str(out), str(checkpoint_dir), json.dumps(extra or {})],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process, timeout=900):
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def _kill_when(process, ready, timeout=600):
    """SIGKILL ``process`` as soon as ``ready()`` holds (polling the checkpoint's files); its output."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the run ended before the checkpoint it was to be killed at:\n" + \
            process.communicate()[0][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    output, _ = process.communicate()
    assert process.returncode == -signal.SIGKILL
    return output


def _same_result(out, reference):
    result, expected = json.loads(out.read_text()), json.loads(reference.read_text())
    assert expected["structure"][0][0] == "SelectFeatures" or expected["structure"][0][1] < 12, expected  # pruned
    # the same layers and kept input features; units within 3 of the 12: the noise after the
    # restored epoch is not the uninterrupted run's (docs/scaling.md), and a pruning run's
    # chosen candidate depends on it (one run kept 9 units where the uninterrupted kept 11)
    def kept_features(structure):  # every layer's kind; the inputs of all but the Dense (its units)
        return [(kind, inputs if kind != "Dense" else None) for kind, _, inputs in structure]

    assert kept_features(result["structure"]) == kept_features(expected["structure"]), (result, expected)
    assert all(abs(a[1] - b[1]) <= 3 for a, b in zip(result["structure"], expected["structure"], strict=True)), \
        (result, expected)
    assert abs(result["val_score"] - expected["val_score"]) <= 1 / expected["n_val"] + 1e-9, (result, expected)


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path):
    """One run killed twice: during the VIB stage, then (resumed under a MirroredStrategy over
    2 logical CPUs) during a candidate's fine-tune; the third start, on one device again,
    finishes it. Beside it, the uninterrupted run it must match."""
    reference = tmp_path / "reference.json"
    uninterrupted = _start(reference, "-")  # no checkpoint_dir: the run to match

    run, out = tmp_path / "run", tmp_path / "run.json"
    _kill_when(_start(out, run, slow=1.0), lambda: (run / "vib/backup/chief/checkpoint").exists())
    manifest = json.loads((run / "manifest.json").read_text())
    assert not manifest["stages"].get("vib", {}).get("done")

    # the one-device checkpoint resumed under the strategy, its own resumed on one device next
    output = _kill_when(_start(out, run, slow=1.0, mirrored=True),
                        lambda: any(run.glob("trials/*/backup/chief/checkpoint")))
    assert "resuming VIB stage at epoch " in output and " of 10 (" in output, output
    assert "replicas: 2" in output, output

    code, output = _finish(_start(out, run))
    assert code == 0, output[-3000:]
    assert "resuming after the VIB stage (finished" in output and "resuming candidate fine-tune " in output, output

    code, output = _finish(uninterrupted)
    assert code == 0, output[-3000:]
    _same_result(out, reference)


def _tiny():
    import numpy as np

    from tf_vib._keras import keras

    model = keras.Sequential([keras.Input((3, 2)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    model.compile("adam", "sparse_categorical_crossentropy")
    return model, np.zeros((20, 3, 2), "float32"), np.arange(20) % 2


@pytest.mark.slow
def test_a_rerun_with_another_argument_or_model_is_refused_before_training(tmp_path, monkeypatch):
    model, x, y = _tiny()
    settings = dict(epochs=0, finetune_epochs=0, verbose=0, checkpoint_dir=tmp_path / "run")
    tf_vib.compress(model, (x, y), **settings)
    assert (tmp_path / "run" / "manifest.json").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(sys.modules["tf_vib.compress._core"], "_run_in_scope", no_training)
    with pytest.raises(BadArgument, match=r"`checkpoint_dir` '.*run' holds a checkpoint of a different run: "
                                          r"epochs=2 \(the checkpoint's run had 0\) differ\. Call compress\(\) "
                                          r"with that run's model, data and arguments to resume it, or pass a new"):
        tf_vib.compress(model, (x, y), **{**settings, "epochs": 2})
    other, _, _ = _tiny()  # other weights
    with pytest.raises(BadArgument, match=r"different run: the model \(its config or weights\) differ"):
        tf_vib.compress(other, (x, y), **settings)


def test_a_checkpoint_dir_that_cannot_be_one_is_refused_before_training(tmp_path):
    model, x, y = _tiny()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(BadArgument, match=r"`checkpoint_dir` must be a folder .*which is a file"):
        tf_vib.compress(model, (x, y), checkpoint_dir=a_file, verbose=0)
    with pytest.raises(BadArgument, match=r"`checkpoint_dir` .* is not empty and holds no compress\(\) checkpoint"):
        tf_vib.compress(model, (x, y), checkpoint_dir=tmp_path, verbose=0)
    with pytest.raises(BadArgument, match=r"`checkpoint_dir` must be None or a path"):
        tf_vib.compress(model, (x, y), checkpoint_dir=3, verbose=0)
