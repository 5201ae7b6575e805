"""Streaming export: one frame per invoke, the states explicit, equal to the whole-clip model."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from helpers import DEVICE_ONLY

import converters
from converters.streaming import keras_steps, step_model
from tf_vib._keras import keras

L = keras.layers
EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "raspberry_pi" / "stream_clip.py"
RNG = np.random.default_rng(0)
CLIPS = RNG.normal(size=(16, 7, 5)).astype("float32")


def _model(*layers, shape=(7, 5), dtype="float32"):
    keras.utils.set_random_seed(1)
    inputs = keras.Input(shape, dtype=dtype)
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def _keras_stream(model, x):
    """Every step's first head output of the Keras step model, stacked: (n, steps, ...)."""
    step, signature = step_model(model)
    return np.stack([heads[0] for _, heads in keras_steps(step, signature, x)], axis=1)


@pytest.mark.parametrize("layers", [
    lambda: [L.LSTM(6), L.Dense(3)],
    lambda: [L.Dense(4, activation="relu"), L.LSTM(6, return_sequences=True), L.LSTM(5), L.Dense(3)],
    lambda: [L.GRU(6), L.Dense(3)],
    lambda: [L.GRU(6, reset_after=False, return_sequences=True), L.BatchNormalization(), L.GRU(4), L.Dense(3)],
    lambda: [L.SimpleRNN(6), L.Dropout(0.5), L.Dense(3)],
    lambda: [L.RNN(L.LSTMCell(6)), L.Dense(3, activation="softmax")],
], ids=["lstm", "stacked-lstm", "gru", "gru-reset-before", "simple-rnn", "rnn-lstmcell"])
def test_step_model_equals_whole_clip_model(layers):
    model = _model(*layers())
    model.layers[-1].set_weights([w + 0.1 for w in model.layers[-1].get_weights()])
    got = _keras_stream(model, CLIPS)
    assert got.shape == (16, 7, 3)
    np.testing.assert_allclose(got[:, -1], model.predict(CLIPS, verbose=0), atol=1e-5)


def test_per_step_head_equals_every_step_and_prefixes_for_a_last_step_head():
    model = _model(L.LSTM(6, return_sequences=True), L.TimeDistributed(L.Dense(3)), L.Activation("tanh"))
    np.testing.assert_allclose(_keras_stream(model, CLIPS), model.predict(CLIPS, verbose=0), atol=1e-5)
    last = _model(L.GRU(6), L.Dense(3), shape=(None, 5))
    got = _keras_stream(last, CLIPS)
    np.testing.assert_allclose(got[:, 3], last.predict(CLIPS[:, :4], verbose=0), atol=1e-5)


def test_token_ids_and_a_static_input():
    keras.utils.set_random_seed(2)
    tokens, static = keras.Input((7,), dtype="int32", name="tokens"), keras.Input((2,), name="static")
    h = L.LSTM(5)(L.Embedding(11, 4)(tokens))
    model = keras.Model([tokens, static], L.Dense(3)(L.Concatenate()([h, L.Dense(2)(static)])))
    step, signature = step_model(model)
    assert signature.input_names == ["tokens", "static", "lstm_h", "lstm_c"]
    assert dict(zip(signature.inputs, signature.timed, strict=True)) == {"tokens": True, "static": False}
    ids, extra = RNG.integers(0, 11, (9, 7)).astype("int32"), RNG.normal(size=(9, 2)).astype("float32")
    x = {"tokens": ids, "static": extra}
    last = list(keras_steps(step, signature, x))[-1][1][0]
    np.testing.assert_allclose(last, model.predict(x, verbose=0), atol=1e-5)


@pytest.fixture(scope="module")
def stacked():
    """LSTM -> GRU -> SimpleRNN, trained a little on a separable task, in float32 and int8."""
    keras.utils.set_random_seed(3)
    x = RNG.normal(size=(300, 7, 5)).astype("float32")
    y = (x[:, :, 0].mean(axis=1) > 0).astype("int64") + (x[:, :, 1].mean(axis=1) > 0)
    model = _model(L.Dense(6, activation="relu"), L.LSTM(6, return_sequences=True),
                   L.GRU(5, return_sequences=True), L.SimpleRNN(4), L.Dense(3))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    flats = converters.to_tflite_many(model, ["float32", "int8"], representative_data=x[:200], streaming=True)
    return model, flats, x[200:], y[200:]


def test_float32_file_equals_whole_clip_model(stacked):
    model, flats, x, _ = stacked
    runner = converters.load_interpreter(flats["float32"])
    got = runner.stream(x)
    assert got.shape == (100, 7, 3)
    assert np.abs(got[:, -1] - model.predict(x, verbose=0)).max() <= 1e-5
    check = converters.verify_streaming(model, flats["float32"], x)
    assert check.passed and check.max_abs_diff <= 1e-5 and check.samples == 100


def test_int8_file_verifies(stacked):
    model, flats, x, y = stacked
    check = converters.verify_streaming(model, flats["int8"], x, y)
    assert check.quantization == "int8"
    assert check.passed, str(check)


def test_runner_runs_the_states_in_and_out(stacked):
    _, flats, x, _ = stacked
    runner = converters.load_interpreter(flats["float32"])
    names = ["lstm_h", "lstm_c", "gru_h", "simple_rnn_h"]
    assert runner.input_names == ["input", *names]
    assert runner.output_names == ["output", *names]
    assert runner.state_names == names
    assert {k: v.shape for k, v in runner.zero_states().items()} == {
        "lstm_h": (1, 6), "lstm_c": (1, 6), "gru_h": (1, 5), "simple_rnn_h": (1, 4)}
    states, outputs = None, []
    for frame in x[0]:
        output, states = runner.step(frame[None], states)
        outputs.append(output)
    np.testing.assert_array_equal(np.concatenate(outputs), runner.stream(x[:1])[0])
    assert set(states) == set(names) and np.abs(states["lstm_c"]).max() > 0
    with pytest.raises(ValueError, match=r"`frames` must hold 1 arrays, one per input \['input'\]"):
        runner.step([x[0, :1], x[0, :1]])
    with pytest.raises(ValueError, match=r"the file takes frames of shape \(5,\), so clips of shape \(n, steps, 5\)"):
        runner.stream(x[:, :, :4])


@pytest.fixture(scope="module")
def cnn():
    """A TimeDistributed CNN -> LSTM with a per-step head, its float32 streaming file and clips."""
    keras.utils.set_random_seed(4)
    model = _model(L.TimeDistributed(L.Conv2D(4, 3, strides=2, activation="relu")),
                   L.TimeDistributed(L.GlobalAveragePooling2D()), L.LSTM(6, return_sequences=True),
                   L.Dense(3), shape=(5, 12, 12, 3))
    clips = RNG.uniform(size=(6, 5, 12, 12, 3)).astype("float32")
    return model, converters.to_tflite(model, quantization="float32", streaming=True), clips


def test_cnn_front_end_with_a_per_step_head(cnn):
    model, flat, clips = cnn
    runner = converters.load_interpreter(flat)
    assert runner.input_shapes == [(12, 12, 3), (6,), (6,)]
    got = runner.stream(clips)
    assert np.abs(got - model.predict(clips, verbose=0)).max() <= 1e-5
    assert converters.verify_streaming(model, flat, clips).passed


def test_stream_clip_example_needs_only_numpy_and_a_runtime(cnn, tmp_path):
    model, flat, clips = cnn
    (tmp_path / "stream.tflite").write_bytes(flat)
    np.save(tmp_path / "clip.npy", clips[2])
    (tmp_path / "sitecustomize.py").write_text(DEVICE_ONLY)
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    expected = int(model.predict(clips[2:3], verbose=0)[0, -1].argmax())
    for source, frames in ((["--clip", "clip.npy"], 5), ([], 8)):  # a saved clip, then a generated one
        result = subprocess.run([sys.executable, str(EXAMPLE), "stream.tflite", *source, "--verbose"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 0, result.stderr
        assert "states lstm_h (6,), lstm_c (6,)" in result.stdout
        assert result.stdout.count("\nframe ") == frames
        assert f"class after {frames} frames: " in result.stdout and "latency per frame: median" in result.stdout
        if source:
            assert f"class after 5 frames: {expected} " in result.stdout


def _bidirectional():
    return _model(L.Bidirectional(L.LSTM(4)), L.Dense(3))


def _initial_state():
    inputs, state = keras.Input((7, 5)), keras.Input((4,))
    return keras.Model([inputs, state], L.GRU(4, name="gru")(inputs, initial_state=state))


@pytest.mark.parametrize("build, match", [
    (lambda: _model(L.LSTM(4, return_sequences=True, name="lstm"), L.GlobalAveragePooling1D(name="pool")),
     r"layer 'pool' \(GlobalAveragePooling1D\): it pools over time: it needs the whole sequence"),
    (lambda: _model(L.LSTM(4, return_sequences=True), L.Flatten(name="flat"), L.Dense(2)),
     r"layer 'flat' \(Flatten\): it flattens the time axis"),
    (_bidirectional, r"\(Bidirectional\): it reads the clip backwards from its last frame too"),
    (lambda: _model(L.LSTM(4, go_backwards=True, name="back")),
     r"layer 'back' \(LSTM\): go_backwards=True reads the clip from its last frame"),
    (lambda: _model(L.Masking(name="masking"), L.LSTM(4)), r"layer 'masking' \(Masking\): it masks steps"),
    (lambda: _model(L.Embedding(9, 3, mask_zero=True, name="embed"), L.LSTM(4), shape=(7,), dtype="int32"),
     r"layer 'embed' \(Embedding\): it masks steps"),
    (lambda: _model(L.Conv1D(4, 3, name="conv"), L.LSTM(4)), r"layer 'conv' \(Conv1D\): it convolves over time"),
    (lambda: _model(L.Dense(4), L.Dense(2), shape=(5,)), r"needs a recurrent layer over a time axis; `model` "
                                                         r"'model(_\d+)?' has none \(its input shapes: \[\(None, 5\)\]\)"),
    (_initial_state, r"layer 'gru' \(GRU\): it is called with an initial_state"),
])
def test_refusals_name_the_layer_before_conversion(build, match):
    model = build()
    with pytest.raises(ValueError, match=match) as error:
        converters.to_tflite(model, quantization="float32", streaming=True, isolate=False)
    assert "Supported: Input((T, F))" in str(error.value)


def test_stateful_layer_is_refused():
    model = keras.Sequential([keras.Input(batch_shape=(1, 7, 5)), L.LSTM(4, stateful=True, name="lstm")])
    with pytest.raises(ValueError, match=r"layer 'lstm' \(LSTM\): it is stateful"):
        step_model(model)


def test_an_output_that_is_a_state_gets_both_names():
    model = _model(L.GRU(4, return_sequences=True))  # the file's output and gru_h are one tensor
    runner = converters.load_interpreter(converters.to_tflite(model, quantization="float32", streaming=True,
                                                              isolate=False))
    assert sorted(runner.output_names) == ["gru_h", "output"] and runner.state_names == ["gru_h"]
    assert np.abs(runner.stream(CLIPS) - model.predict(CLIPS, verbose=0)).max() <= 1e-5
