"""converters on the inputs users bring: token ids, masks, several inputs and outputs, bad shapes.

Models are tiny and trained for a few epochs on synthetic tasks so that int8's accuracy
target means something; each model's files come from as few child processes as its modes
allow.
"""

import contextlib
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from helpers import DEVICE_ONLY
from test_runtime import RUNNER

import converters
from converters import runtime
from converters import tflite as tflite_module
from tf_vib._keras import keras

VOCABULARY, STEPS = 20, 7
FLOAT_MODES = ("float32", "dynamic", "float16")


@contextlib.contextmanager
def _no_conversion():
    """Inside, starting a conversion fails the test: what is refused is refused before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("conversion started")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tflite_module, "_convert", refuse)
        yield


def _fit(model, x, y, epochs=15):
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def _tokens(n, seed=0, low=0):
    """Token ids and labels: the class is the last token's id modulo 3."""
    ids = np.random.default_rng(seed).integers(low, VOCABULARY, size=(n, STEPS)).astype("int32")
    return ids, ids[:, -1] % 3


@pytest.fixture(scope="module")
def token_files():
    """An Embedding -> LSTM -> Dense model and its files: float modes without any data, int8 with."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((STEPS,), dtype="int32"), keras.layers.Embedding(VOCABULARY, 4),
                              keras.layers.LSTM(8), keras.layers.Dense(3)])
    ids, labels = _tokens(400)
    _fit(model, ids, labels)
    files = converters.to_tflite_many(model, FLOAT_MODES)  # the first invoke gets valid ids
    files["int8"] = converters.to_tflite(model, quantization="int8", representative_data=ids[:200])
    files["int8_io"] = converters.to_tflite(model, quantization="int8", int8_io=True,
                                            representative_data=ids[:200])
    return model, files


@pytest.mark.parametrize("mode", [*FLOAT_MODES, "int8", "int8_io"])
def test_token_ids_stay_int32_in_every_mode_and_verify(token_files, mode):
    model, files = token_files
    info = converters.describe_tflite(files[mode])
    assert info.inputs[0].dtype == "int32" and info.inputs[0].scale is None
    assert info.outputs[0].dtype == ("int8" if mode == "int8_io" else "float32")
    assert info.quantization == ("int8" if mode.startswith("int8") else "float32" if mode == "dynamic" else mode)
    ids, labels = _tokens(200, seed=1)
    result = converters.verify(model, files[mode], ids, labels)
    assert result.keras_accuracy > 0.9 and result.passed, str(result)
    if mode == "float32":
        assert result.max_abs_diff <= 1e-5


def test_token_ids_are_fed_as_they_are_not_quantized(token_files):
    _, files = token_files
    loaded = converters.load_interpreter(files["int8"])
    ids, _ = _tokens(3)
    fed = loaded.quantize_input(ids)
    assert fed.dtype == np.int32 and np.array_equal(fed, ids)
    quantized = {"dtype": np.int8, "quantization": (0.5, -3)}
    np.testing.assert_array_equal(loaded.quantize_input(np.array([1.0, -1.0]), quantized), [-1, -5])
    np.testing.assert_array_equal(loaded.dequantize_output(np.array([-1, -5], np.int8), quantized), [1.0, -1.0])
    plain = {"dtype": np.int32, "quantization": (0.0, 0)}
    np.testing.assert_array_equal(loaded.dequantize_output(np.array([7, 2], np.int32), plain), [7.0, 2.0])
    with pytest.raises(ValueError, match=r"`x` must hold whole numbers \(the file's input is int32"):
        loaded.predict(ids + 0.5)


def test_variable_length_tokens_need_time_steps():
    model = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(VOCABULARY, 3),
                              keras.layers.GRU(4), keras.layers.Dense(2)])
    with _no_conversion(), pytest.raises(ValueError, match=r"sequences of any length \(input shape "
                                                           r"\(None, None\)\).*pass time_steps=N"):
        converters.to_tflite(model, quantization="float32")
    flat = converters.to_tflite(model, quantization="float32", time_steps=STEPS)
    assert converters.describe_tflite(flat).inputs[0].shape == (1, STEPS)
    ids, _ = _tokens(12)
    assert converters.verify(model, flat, ids).max_abs_diff <= 1e-5


@pytest.mark.parametrize("data, match", [
    (np.full((8, STEPS), VOCABULARY), r"token ids from 20 to 20; the Embedding reading this input takes ids in \[0, 20\)"),
    (np.full((8, STEPS), -1), r"token ids from -1 to -1"),
    (np.full((8, STEPS), 1.5), r"must hold whole numbers: the model's input is int32"),
])
def test_bad_token_ids_are_refused_before_conversion(data, match):
    model = keras.Sequential([keras.Input((STEPS,), dtype="int32"), keras.layers.Embedding(VOCABULARY, 3),
                              keras.layers.LSTM(4), keras.layers.Dense(2)])
    with _no_conversion(), pytest.raises(ValueError, match="`representative_data` .*" + match):
        converters.to_tflite(model, quantization="int8", representative_data=data)


def test_mask_zero_converts_as_a_loop_in_float_modes_and_int8_is_refused():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((STEPS,), dtype="int32"),
                              keras.layers.Embedding(VOCABULARY, 4, mask_zero=True),
                              keras.layers.LSTM(5), keras.layers.Dense(3)])
    ids, _ = _tokens(20, low=1)
    ids[:, :3] = 0  # left padding: the mask skips these steps
    with _no_conversion(), pytest.raises(ValueError, match=r"\(LSTM\) would become a WHILE loop.*"
                                                              "carries a Keras mask.*mask_zero"):
        converters.to_tflite(model, quantization="int8", representative_data=ids)
    files = converters.to_tflite_many(model, FLOAT_MODES)
    for mode, flat in files.items():
        assert "WHILE" in converters.describe_tflite(flat).ops
        assert converters.verify(model, flat, ids).passed, mode
    unmasked = model.predict(np.where(ids == 0, 1, ids), verbose=0)
    assert np.abs(converters.load_interpreter(files["float32"]).predict(ids) - unmasked).max() > 1e-3


# -- several inputs and outputs --------------------------------------------------------------


def _two_input_data(n, seed=0):
    rng = np.random.default_rng(seed)
    sequences = rng.normal(size=(n, 5, 3)).astype("float32")
    static = rng.normal(size=(n, 2)).astype("float32")
    return sequences, static, sequences.sum(1).argmax(-1), static.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def two_in_two_out():
    """Inputs [sequence, static] -> outputs [class logits, a regression], files in every mode."""
    keras.utils.set_random_seed(0)
    sequence, static = keras.Input((5, 3), name="sequence"), keras.Input((2,), name="static")
    hidden = keras.layers.Add()([keras.layers.Dense(8)(keras.layers.LSTM(8)(sequence)), keras.layers.Dense(8)(static)])
    model = keras.Model([sequence, static], [keras.layers.Dense(3, name="label")(hidden),
                                             keras.layers.Dense(1, name="total")(hidden)])
    model.compile(keras.optimizers.Adam(1e-2), [keras.losses.SparseCategoricalCrossentropy(from_logits=True), "mse"])
    sequences, statics, labels, totals = _two_input_data(600)
    model.fit([sequences, statics], [labels, totals], epochs=15, batch_size=32, verbose=0)
    return model, converters.to_tflite_many(model, representative_data=[sequences[:200], statics[:200]])


@pytest.mark.parametrize("mode", converters.QUANTIZATIONS)
def test_two_inputs_and_two_outputs_convert_in_every_mode_and_verify(two_in_two_out, mode):
    model, files = two_in_two_out
    sequences, statics, labels, _ = _two_input_data(200, seed=1)
    loaded = converters.load_interpreter(files[mode])
    assert loaded.input_names == ["sequence", "static"] and loaded.input_shapes == [(5, 3), (2,)]
    outputs = loaded.predict({"static": statics, "sequence": sequences})
    expected = model.predict([sequences, statics], verbose=0)
    assert [o.shape for o in outputs] == [(200, 3), (200, 1)]
    if mode != "int8":  # int8 is judged on accuracy, by verify
        for got, want in zip(outputs, expected, strict=True):
            assert np.abs(got - want).max() <= (1e-5 if mode == "float32" else 0.05)
    np.testing.assert_array_equal(loaded.predict([sequences, statics])[1], outputs[1])
    result = converters.verify(model, files[mode], [sequences, statics], [labels, None])
    assert result.passed, str(result)
    assert result.keras_accuracy[0] > 0.9 and result.keras_accuracy[1] is None
    assert converters.evaluate_tflite(files[mode], [sequences, statics], [labels, None])[0] == result.tflite_accuracy[0]


def test_dict_inputs_of_mixed_types_convert_and_verify():
    # Built from a dict: Keras keys the inputs by the dict's keys, and so does the file.
    keras.utils.set_random_seed(0)
    tokens, features = keras.Input((STEPS,), dtype="int32", name="ids"), keras.Input((STEPS, 2), name="values")
    merged = keras.layers.Concatenate()([keras.layers.Embedding(VOCABULARY, 3)(tokens), features])
    model = keras.Model({"tokens": tokens, "features": features},
                        keras.layers.Dense(3)(keras.layers.Dense(6)(keras.layers.LSTM(6)(merged))))
    ids, labels = _tokens(400)
    values = np.random.default_rng(0).normal(size=(400, STEPS, 2)).astype("float32")
    _fit(model, {"tokens": ids, "features": values}, labels)
    files = converters.to_tflite_many(model, ("float32", "int8"),
                                      representative_data={"tokens": ids[:200], "features": values[:200]})
    for mode, flat in files.items():
        info = converters.describe_tflite(flat)
        assert [(t.dtype, t.shape) for t in info.inputs] == [("float32", (1, STEPS, 2)), ("int32", (1, STEPS))]
        loaded = converters.load_interpreter(flat)
        assert loaded.input_names == ["features", "tokens"]
        result = converters.verify(model, flat, {"tokens": ids[200:], "features": values[200:]}, labels[200:])
        assert result.passed and result.keras_accuracy > 0.9, f"{mode}: {result}"


def test_inputs_and_outputs_keep_the_keras_order():
    # The converter's own order: the signature's names sorted, so output_10 before output_2.
    zeta, alpha = keras.Input((2,), name="zeta"), keras.Input((2,), name="alpha")
    total = keras.layers.Concatenate()([zeta, 10 * alpha])
    heads = [keras.layers.Dense(1, bias_initializer=keras.initializers.Constant(100.0 * i))(total)
             for i in range(12)]
    model = keras.Model([zeta, alpha], heads)
    flat = converters.to_tflite(model, quantization="float32", isolate=False)
    loaded = converters.load_interpreter(flat)
    assert loaded.input_names == ["zeta", "alpha"]
    x = [np.ones((4, 2), "float32"), np.zeros((4, 2), "float32")]
    got = loaded.predict(x)
    for got_output, want in zip(got, model.predict(x, verbose=0), strict=True):
        np.testing.assert_allclose(got_output, want, atol=1e-4)


@pytest.mark.parametrize("x, match", [
    (lambda s, t: [s[:, :, :2], t], r"`x\[0\]` has samples of shape \(5, 2\), but the file takes \(5, 3\)"),
    (lambda s, t: [s[:, 0], t], r"`x\[0\]` has samples of shape \(3,\), but the file takes \(5, 3\)"),
    (lambda s, t: [s], r"`x` must hold 2 arrays, one per input \['sequence', 'static'\]; received 1"),
    (lambda s, t: s, r"2 inputs \['sequence', 'static'\]: `x` must be a list of 2 arrays or a dict.*"
                     r"received one array of shape \(6, 5, 3\)"),
    (lambda s, t: {"sequence": s, "statics": t}, r"`x` must have one array per input, keys \['sequence', 'static'\]"),
    (lambda s, t: [s, t[:4]], r"different numbers of samples: \[6, 4\]"),
])
def test_verify_refuses_inputs_of_the_wrong_shape_before_running(two_in_two_out, monkeypatch, x, match):
    model, files = two_in_two_out
    sequences, statics, _, _ = _two_input_data(6)
    monkeypatch.setattr(model, "predict", lambda *a, **k: pytest.fail("the Keras model ran"))
    monkeypatch.setattr(runtime.TFLiteModel, "run_batch", lambda *a, **k: pytest.fail("the file ran"))
    with pytest.raises(ValueError, match=match):
        converters.verify(model, files["float32"], x(sequences, statics))


def test_verify_refuses_a_single_input_of_the_wrong_shape(token_files, monkeypatch):
    model, files = token_files
    monkeypatch.setattr(runtime.TFLiteModel, "run_batch", lambda *a, **k: pytest.fail("the file ran"))
    with pytest.raises(ValueError, match=r"`x` has samples of shape \(5,\), but the file takes \(7,\)"):
        converters.verify(model, files["float32"], np.zeros((3, 5), "int32"))
    first, second = keras.Input((STEPS,)), keras.Input((STEPS,))
    two = keras.Model([first, second], keras.layers.Add()([first, second]))
    with pytest.raises(ValueError, match=r"`model` has 2 inputs but the file has 1 \(\['input'\]\)"):
        converters.verify(two, files["float32"], [np.zeros((3, STEPS))] * 2)
    with pytest.raises(ValueError, match=r"`y` must hold 3 class indices"):
        converters.verify(model, files["float32"], np.zeros((3, STEPS), "int32"), np.zeros(4))


def test_the_pi_runner_takes_several_inputs_by_name(two_in_two_out, tmp_path):
    _, files = two_in_two_out
    (tmp_path / "model.tflite").write_bytes(files["float32"])
    sequences, statics, labels, _ = _two_input_data(8, seed=2)
    np.savez(tmp_path / "inputs.npz", sequence=sequences, static=statics, y0=labels)
    (tmp_path / "sitecustomize.py").write_text(DEVICE_ONLY)
    command = [sys.executable, str(RUNNER), "model.tflite", "inputs.npz", "--repeats", "2"]
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    expected = converters.load_interpreter(files["float32"]).predict([sequences, statics])
    assert "inputs sequence (1, 5, 3) float32, static (1, 2) float32" in result.stdout
    shown = result.stdout.split("output 0 predictions (8 samples): ")[1].splitlines()[0]
    assert shown == ", ".join(str(int(p)) for p in expected[0].argmax(-1))
    assert f"output 0 accuracy: {100 * np.mean(expected[0].argmax(-1) == labels):.2f}%" in result.stdout
    assert "output 1 predictions (8 samples)" in result.stdout and "latency:" in result.stdout
    np.savez(tmp_path / "unnamed.npz", x0=sequences, x1=statics)
    result = subprocess.run(command[:3] + ["unnamed.npz"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode != 0
    assert "the file's inputs are ['sequence', 'static']" in result.stderr and "lacks" in result.stderr


def test_the_runner_help_says_how_to_pass_several_inputs():
    help_text = subprocess.run([sys.executable, str(RUNNER), "--help"], capture_output=True, text=True,
                               timeout=60).stdout
    assert "one array named after each input" in " ".join(help_text.split())
    assert pathlib.Path(RUNNER).resolve() == pathlib.Path(runtime.__file__).resolve()


def test_per_step_labels_judge_a_tagger_in_verify_and_evaluate():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 6, 3)).astype("float32")
    model = keras.Sequential([keras.Input((6, 3)), keras.layers.LSTM(4, return_sequences=True),
                              keras.layers.TimeDistributed(keras.layers.Dense(3))])
    y = model.predict(x, verbose=0).argmax(-1)
    y[:, 0] = (y[:, 0] + 1) % 3  # the first step of each sequence is wrong: 5/6 right
    flat = converters.to_tflite(model, quantization="float32")
    result = converters.verify(model, flat, x, y)
    assert result.passed and result.keras_accuracy == pytest.approx(5 / 6)
    assert result.tflite_accuracy == pytest.approx(5 / 6)
    one_hot = np.eye(3)[y]
    assert converters.evaluate_tflite(flat, x, one_hot) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match=r"`y` must hold 24 class indices per step \(n, steps\) or one-hot; "
                                         r"received shape \(24,\)"):
        converters.verify(model, flat, x, y[:, 0])
