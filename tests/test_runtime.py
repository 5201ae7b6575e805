"""converters.runtime and the Raspberry Pi runner: runtime choice, state reset, the CLIs."""

import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import DEVICE_ONLY

import converters
import tf_vib
from converters import runtime
from tf_vib._keras import keras

ROOT = pathlib.Path(__file__).resolve().parent.parent
RUNNER = ROOT / "examples" / "raspberry_pi" / "tflite_runner.py"


@pytest.fixture(scope="module")
def lstm_file():
    """A float32 fused-LSTM file and its model: 5 steps of 3 features, 4 classes."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(6), keras.layers.Dense(4)])
    return model, converters.to_tflite(model, quantization="float32")


def test_the_fused_lstm_keeps_its_state_unless_reset(lstm_file, rng):
    _, flat = lstm_file
    loaded = converters.load_interpreter(flat)
    interpreter, detail = loaded.interpreter, loaded.input_detail
    sample = rng.normal(size=(1, 5, 3)).astype("float32")

    def invoke():
        interpreter.set_tensor(detail["index"], sample)
        interpreter.invoke()
        return interpreter.get_tensor(loaded.output_detail["index"]).copy()

    first, second = invoke(), invoke()
    assert np.abs(first - second).max() > 1e-4  # the classic bug: state carried over
    assert np.array_equal(loaded.predict(np.repeat(sample, 3, axis=0))[0], loaded.predict(sample)[0])
    np.testing.assert_array_equal(loaded.predict(sample), first)


def test_runtimes_are_tried_in_order_and_named(lstm_file, monkeypatch):
    _, flat = lstm_file
    assert converters.load_interpreter(flat).runtime == "ai_edge_litert"
    assert converters.load_interpreter(flat, runtime="tensorflow").runtime == "tensorflow"
    original = runtime._interpreter_class

    def without_litert(name):
        if name == "ai_edge_litert":
            raise ImportError("No module named 'ai_edge_litert'")
        return original(name)

    monkeypatch.setattr(runtime, "_interpreter_class", without_litert)
    loaded = converters.load_interpreter(flat)
    expected = "tflite_runtime" if "tflite_runtime" in runtime.available_runtimes() else "tensorflow"
    assert loaded.runtime == expected


def test_a_file_no_runtime_can_load_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(RuntimeError, match="no TFLite runtime could load the model") as caught:
        converters.load_interpreter(bad)
    assert "ai_edge_litert: cannot load the file" in str(caught.value)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"num_threads": 0}, ValueError, "`num_threads` must be an integer >= 1; received 0"),
    ({"runtime": "tflite"}, ValueError, "`runtime` must be None or one of"),
])
def test_load_interpreter_bad_arguments(lstm_file, kwargs, error, match):
    with pytest.raises(error, match=match):
        converters.load_interpreter(lstm_file[1], **kwargs)


def test_load_interpreter_bad_model_arguments(tmp_path):
    with pytest.raises(ValueError, match="is not a file"):
        converters.load_interpreter(tmp_path / "missing.tflite")
    with pytest.raises(TypeError, match="a path or the bytes"):
        converters.load_interpreter(42)


def test_predict_checks_the_sample_shape(lstm_file):
    loaded = converters.load_interpreter(lstm_file[1])
    with pytest.raises(ValueError, match=r"samples of shape \(5, 4\), but the file takes \(5, 3\)"):
        loaded.predict(np.zeros((2, 5, 4)))


def test_measure_latency(lstm_file, rng):
    x = rng.normal(size=(4, 5, 3)).astype("float32")
    latency = converters.measure_latency(lstm_file[1], x, repeats=3, warmup=1)
    assert len(latency.per_sample) == 4
    assert 0 < latency.median < 1.0
    assert latency.median_us == pytest.approx(1e6 * latency.median)
    with pytest.raises(ValueError, match="`repeats` must be an integer >= 1; received 0"):
        converters.measure_latency(lstm_file[1], x, repeats=0)


def test_compare_latency_times_every_file_on_every_sample(lstm_file, rng):
    x = rng.normal(size=(3, 5, 3)).astype("float32")
    loaded = converters.load_interpreter(lstm_file[1])
    latency = converters.compare_latency({"a": lstm_file[1], "b": loaded}, x, repeats=2, rounds=2)
    assert sorted(latency) == ["a", "b"]
    assert all(len(v.per_sample) == 3 and 0 < v.median < 1.0 for v in latency.values())
    # Each file ran one untimed and `repeats` timed invokes per sample per round.
    calls = []
    original = loaded.run_batch
    loaded.run_batch = lambda batch: calls.append(batch.copy()) or original(batch)
    converters.compare_latency({"b": loaded}, x, repeats=2, rounds=2)
    assert len(calls) == 2 * 3 * 3
    np.testing.assert_array_equal(calls[3][0], x[1])
    with pytest.raises(ValueError, match="`rounds` must be an integer >= 1; received 0"):
        converters.compare_latency({"a": loaded}, x, rounds=0)
    assert converters.compare_latency({}, x) == {}
    batch_of_two = converters.to_tflite(lstm_file[0], quantization="float32", batch_size=2, isolate=False)
    with pytest.raises(ValueError, match=r"one batch size.*'a': 1, 'b': 2"):
        converters.compare_latency({"a": loaded, "b": batch_of_two}, x)
    with pytest.raises(ValueError, match=r"samples of shape \(5, 4\), but the file takes \(5, 3\)"):
        converters.compare_latency({"a": loaded}, np.zeros((2, 5, 4)))




def test_compare_latency_left_the_runner_and_its_old_name_warns():
    assert "compare_latency" not in runtime.__all__
    with pytest.warns(FutureWarning, match=r"`converters\.runtime\.compare_latency` is deprecated .* 0\.3"):
        assert runtime.compare_latency is converters.compare_latency
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        runtime.nothing  # noqa: B018


def test_the_pi_runner_needs_only_numpy_and_a_runtime(lstm_file, tmp_path, rng):
    """The runner's files, copied out of the repository as a user copies the example folder
    to the Pi (links followed), run a file with tf-vib, TensorFlow and Keras unimportable."""
    model, flat = lstm_file
    folder = RUNNER.parent
    assert RUNNER.resolve() == (ROOT / "converters" / "runtime.py").resolve()
    links = {path.name: path.resolve() for path in folder.glob("*.py") if path.is_symlink()}
    assert links == {"tflite_runner.py": ROOT / "converters" / "runtime.py",
                     "_tflite_model.py": ROOT / "converters" / "_tflite_model.py"}
    for path in folder.glob("*.py"):
        shutil.copyfile(path, tmp_path / path.name)  # the content, not the link
    (tmp_path / "model.tflite").write_bytes(flat)
    x = rng.normal(size=(12, 5, 3)).astype("float32")
    y = model.predict(x, verbose=0).argmax(-1)
    np.savez(tmp_path / "inputs.npz", x=x, y=y)
    (tmp_path / "sitecustomize.py").write_text(DEVICE_ONLY)
    result = subprocess.run(
        [sys.executable, "tflite_runner.py", "model.tflite", "inputs.npz", "--repeats", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "runtime: ai_edge_litert" in result.stdout
    assert "accuracy: 100.00%" in result.stdout
    assert "latency:" in result.stdout and "us per invoke" in result.stdout
    shown = result.stdout.split("predictions (12 samples): ")[1].split()[0:10]
    assert [int(p.rstrip(",")) for p in shown] == y[:10].tolist()


def test_tf_vib_convert_command(tmp_path, capsys):
    data = tf_vib.datasets.digits_rows()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(data.input_shape), keras.layers.LSTM(16), keras.layers.Dense(10)])
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.x_train, data.y_train, epochs=6, batch_size=64, verbose=0)
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "calibration.npz", x=data.x_train[:200])
    np.savez(tmp_path / "test.npz", x=data.x_test, y=data.y_test)
    from tf_vib.cli import main

    code = main(["convert", str(tmp_path / "model.keras"), "-o", str(tmp_path / "out" / "model.tflite"),
                 "--quantization", "int8", "--calibration", str(tmp_path / "calibration.npz"),
                 "--verify", str(tmp_path / "test.npz"), "--c-header", str(tmp_path / "model.h")])
    printed = capsys.readouterr().out
    assert code == 0
    flat = (tmp_path / "out" / "model.tflite").read_bytes()
    assert f"size: {len(flat):,} bytes" in printed
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in printed and "quantization: int8" in printed
    assert "accuracy within 1 point of Keras: passed" in printed
    assert "model_tflite_len" in (tmp_path / "model.h").read_text()
    with pytest.raises(SystemExit, match="has arrays"):
        np.savez(tmp_path / "wrong.npz", inputs=data.x_train[:10])
        main(["convert", str(tmp_path / "model.keras"), "-o", str(tmp_path / "m.tflite"),
              "--quantization", "int8", "--calibration", str(tmp_path / "wrong.npz")])


@pytest.mark.parametrize("option, gather", [([], False), (["--feature-selection", "gather"], True)])
def test_tf_vib_convert_feature_selection(tmp_path, capsys, option, gather):
    inputs = keras.Input((6, 8))
    selected = tf_vib.layers.SelectFeatures([0, 1, 2, 3, 5, 6, 7])(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.LSTM(10)(selected)))
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).normal(size=(20, 6, 8)).astype("float32"))
    from tf_vib.cli import main

    code = main(["convert", str(tmp_path / "model.keras"), "-o", str(tmp_path / "m.tflite"),
                 "--quantization", "float32", "--verify", str(tmp_path / "x.npz"), *option])
    printed = capsys.readouterr().out
    assert code == 0 and "max |diff| <= 0.0001: passed" in printed
    assert ("GATHER" in printed) is gather


@pytest.mark.parametrize("option, rows", [([], 12), (["--unit-multiple", "1"], 9)])
def test_tf_vib_convert_unit_multiple(tmp_path, capsys, option, rows):
    model = keras.Sequential([keras.Input((6, 8)), keras.layers.LSTM(9), keras.layers.Dense(3)])
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).normal(size=(20, 6, 8)).astype("float32"))
    from tf_vib.cli import main

    code = main(["convert", str(tmp_path / "model.keras"), "-o", str(tmp_path / "m.tflite"),
                 "--quantization", "float32", "--verify", str(tmp_path / "x.npz"), *option])
    assert code == 0 and "max |diff| <= 0.0001: passed" in capsys.readouterr().out
    interpreter = converters.load_interpreter(tmp_path / "m.tflite").interpreter
    assert (rows, 8) in {tuple(int(d) for d in t["shape"]) for t in interpreter.get_tensor_details()}
    with pytest.raises(SystemExit):
        main(["convert", str(tmp_path / "model.keras"), "-o", str(tmp_path / "m.tflite"), "--unit-multiple", "0"])
    assert "--unit-multiple: must be 'auto' or an integer >= 1; received '0'" in capsys.readouterr().err


class _FixedOutputs(runtime.TFLiteModel):
    """A loaded file that returns given outputs: the verification rule alone is tested."""

    def __init__(self, outputs):
        self.outputs, self.runtime = outputs, "fixed"
        detail = {"name": "serving_default_input:0", "shape": np.array([1, 3]), "dtype": np.float32,
                  "quantization": (0.0, 0)}
        self.input_details = self.output_details = [detail]
        self.input_names = ["input"]

    def predict(self, x):
        return self.outputs


@pytest.mark.parametrize("logits, passed", [
    ([[20.0, 0.0, -5.0], [0.0, 18.0, 1.0]], True),   # saturated: probabilities move < 1e-6
    ([[0.2, 0.0, 0.1], [0.0, 0.3, 0.1]], False),     # near-uniform: probabilities move ~0.07
])
def test_dynamic_range_falls_back_to_probabilities_for_logits(logits, passed):
    logits = np.array(logits, "float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, use_bias=False)])
    model.layers[0].set_weights([np.eye(3, dtype="float32")])
    shifted = logits + np.array([[0.3, 0.0, 0.0], [0.0, -0.3, 0.0]], "float32")  # beyond 1e-2 x scale
    result = converters.verify(model, _FixedOutputs(shifted), logits, quantization="dynamic")
    assert result.max_abs_diff == pytest.approx(0.3, abs=1e-5)
    assert result.passed is passed
    assert "softmax probabilities" in result.criterion
    assert converters.verify(model, _FixedOutputs(shifted), logits, quantization="float16").passed is passed
    # float32 keeps its absolute 1e-4 on the logits: no probability fallback
    assert not converters.verify(model, _FixedOutputs(logits + 1e-3), logits, quantization="float32").passed


def test_tf_vib_convert_auto_plan_and_streaming(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6, 4)).astype("float32")
    y = (x[:, :, 0].mean(axis=1) > 0).astype("int64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 4)), keras.layers.LSTM(8), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=4, verbose=0)
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    from tf_vib.cli import main

    code = main(["convert", str(tmp_path / "model.keras"), "-o", str(tmp_path / "auto.tflite"),
                 "--quantization", "auto", "--calibration", str(tmp_path / "data.npz")])
    printed = capsys.readouterr().out
    # the shipped table: a small fused LSTM and its head are faster in float32 on the Pi
    assert code == 0 and "quantization plan (auto): lstm (LSTM) -> " in printed
    # its verification data (120 samples) is too few for the fallback to decide on: said so
    assert "the file has the 'cost table' plan" in printed and "120 verify_data, fewer than the 200" in printed
    assert "verification: " in printed and "passed" in printed.split("verification: ")[1]
    code = main(["convert", str(tmp_path / "model.keras"), "-o", str(tmp_path / "stream.tflite"),
                 "--quantization", "float32", "--streaming", "--verify", str(tmp_path / "data.npz")])
    printed = capsys.readouterr().out
    assert code == 0 and "passed" in printed.split("verification: ")[1]
    loaded = runtime.load_interpreter((tmp_path / "stream.tflite").read_bytes())
    assert len(loaded.input_details) == 3  # the frame, then h and c of the LSTM
