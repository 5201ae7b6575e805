"""converters on the layers users write around their RNNs: Bidirectional, SimpleRNN, both GRUs,
Conv1D front-ends, per-step outputs, pooling over steps; in every mode TFLite allows.

Each architecture is one output of a shared multi-output model, so that one child process
converts all of them in every mode; docs/deployment.md has what each becomes, measured alone.
"""

import numpy as np
import pytest

import converters
from converters import plan as planning
from converters import tflite as tflite_module
from tf_vib._keras import keras

STEPS, FEATURES, CLASSES = 6, 3, 3
L = keras.layers
BIDIRECTIONAL_LSTMS = {
    "bidi_concat": lambda: [L.Bidirectional(L.LSTM(4))],
    "bidi_sum": lambda: [L.Bidirectional(L.LSTM(4), merge_mode="sum")],
    "bidi_ave": lambda: [L.Bidirectional(L.LSTM(4), merge_mode="ave")],
    "bidi_mul": lambda: [L.Bidirectional(L.LSTM(4), merge_mode="mul")],
}
# Apart from the fused LSTMs, which share their state variables' zeros with the loops (see
# test_a_loop_after_a_fused_lstm_starts_from_zeros_in_every_mode).
LOOPS = {
    "simple_rnn": lambda: [L.SimpleRNN(4)],
    "gru": lambda: [L.GRU(4)],
    "gru_v1": lambda: [L.GRU(4, reset_after=False)],
    "bidi_gru": lambda: [L.Bidirectional(L.GRU(4))],
}
FRONT_ENDS = {
    "conv_pool": lambda: [L.Conv1D(4, 3, activation="relu"), L.MaxPooling1D(2), L.LSTM(4)],
    "pooled_steps": lambda: [L.LSTM(4, return_sequences=True), L.GlobalAveragePooling1D()],
    "per_step": lambda: [L.LSTM(4, return_sequences=True)],  # TimeDistributed(Dense) head below
}


def _data(n, seed):
    """Inputs and labels: the class is the feature with the largest sum (per step: so far)."""
    x = np.random.default_rng(seed).normal(size=(n, STEPS, FEATURES)).astype("float32")
    return x, x.sum(1).argmax(-1), np.cumsum(x, axis=1).argmax(-1)


def _branches(architectures):
    inputs = keras.Input((STEPS, FEATURES))
    outputs = []
    for name, make in architectures.items():
        hidden = inputs
        for layer in make():
            hidden = layer(hidden)
        head = L.TimeDistributed(L.Dense(CLASSES)) if name == "per_step" else L.Dense(CLASSES)
        outputs.append(L.Activation("linear", name=f"{name}_output")(head(hidden)))
    model = keras.Model(inputs, outputs)
    x, y, per_step = _data(600, 0)
    model.compile(keras.optimizers.Adam(2e-2), [keras.losses.SparseCategoricalCrossentropy(from_logits=True)]
                  * len(outputs))
    model.fit(x, [per_step if name == "per_step" else y for name in architectures], epochs=25,
              batch_size=32, verbose=0)
    return model, converters.to_tflite_many(model, representative_data=x[:300])


GROUPS = {"bidirectional_lstms": BIDIRECTIONAL_LSTMS, "loops": LOOPS, "front_ends": FRONT_ENDS}


@pytest.fixture(scope="module")
def converted():
    keras.utils.set_random_seed(0)
    return {name: _branches(GROUPS[name]) for name in GROUPS}


#: Op counts each shared model's file must have: 4 Bidirectional LSTMs are 8 fused LSTMs (the
#: 4 backward ones share one REVERSE_V2 of the input); a GRU,
#: a SimpleRNN and the two directions of a Bidirectional GRU are 5 loops in the float modes
#: and none in int8, where they are unrolled.
EXPECTED_OPS = {
    ("bidirectional_lstms", "float"): {"UNIDIRECTIONAL_SEQUENCE_LSTM": 8, "REVERSE_V2": 1, "WHILE": 0},
    ("bidirectional_lstms", "int8"): {"UNIDIRECTIONAL_SEQUENCE_LSTM": 8, "REVERSE_V2": 1, "WHILE": 0},
    ("loops", "float"): {"WHILE": 5, "UNIDIRECTIONAL_SEQUENCE_LSTM": 0},
    ("loops", "int8"): {"WHILE": 0, "UNIDIRECTIONAL_SEQUENCE_LSTM": 0},
    ("front_ends", "float"): {"UNIDIRECTIONAL_SEQUENCE_LSTM": 3, "CONV_2D": 1, "MAX_POOL_2D": 1, "MEAN": 1},
    ("front_ends", "int8"): {"UNIDIRECTIONAL_SEQUENCE_LSTM": 3, "CONV_2D": 1, "MAX_POOL_2D": 1, "MEAN": 1,
                             "WHILE": 0},
}


@pytest.mark.parametrize("mode", converters.QUANTIZATIONS)
@pytest.mark.parametrize("group", list(GROUPS))
def test_every_architecture_converts_in_every_mode_and_verifies(converted, group, mode):
    model, files = converted[group]
    ops = converters.describe_tflite(files[mode]).op_counts
    for op, count in EXPECTED_OPS[group, "int8" if mode == "int8" else "float"].items():
        assert ops.get(op, 0) == count, (op, ops)
    x, y, per_step = _data(300, 1)
    names = list(GROUPS[group])
    labels = [None if name == "per_step" else y for name in names]
    result = converters.verify(model, files[mode], x, labels)
    assert min(a for a in result.keras_accuracy if a is not None) > 0.75, str(result)
    assert result.passed, str(result)
    if mode == "float32":
        assert result.max_abs_diff <= 1e-4


def test_a_loop_after_a_fused_lstm_starts_from_zeros_in_every_mode(rng):
    """TFLite's converter merged the zeros of a loop's initial state with a fused LSTM's state
    variable, so the loop started from the LSTM's final state (float32 off by 1.7e-2 for a GRU,
    0.22 for a SimpleRNN): converters/_state_repair.py unties them, and the file says so."""
    from converters._state_repair import untie_state_variables

    inputs = keras.Input((STEPS, FEATURES))
    sequence = L.LSTM(4, return_sequences=True)(inputs)
    loops = [L.GRU(4), L.GRU(4, reset_after=False), L.SimpleRNN(4)]
    model = keras.Model(inputs, [L.Dense(CLASSES)(loop(sequence)) for loop in loops])
    for w in model.weights:
        w.assign(rng.normal(scale=0.5, size=w.shape))
    x = rng.normal(size=(200, STEPS, FEATURES)).astype("float32")
    files = converters.to_tflite_many(model, representative_data=x)
    for mode, flat in files.items():
        notes = converters.describe_tflite(flat).tf_vib or {}
        assert notes.get("state_repairs"), (mode, notes)
        assert "shared state variables untied" in str(converters.describe_tflite(flat)), mode
        result = converters.verify(model, flat, x)
        assert result.passed, (mode, str(result))
        if mode == "float32":
            assert result.max_abs_diff <= 1e-5, str(result)
        # the repair is done once: the file it wrote has nothing left to untie
        assert untie_state_variables(flat) == (flat, []), mode


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "ave", "mul"])
@pytest.mark.parametrize("make", [lambda **k: L.GRU(5, **k), lambda **k: L.GRU(5, reset_after=False, **k),
                                  lambda **k: L.SimpleRNN(5, **k)], ids=["gru", "gru_v1", "simple_rnn"])
@pytest.mark.parametrize("sequences", [False, True])
def test_unrolled_bidirectional_layers_equal_keras(rng, merge_mode, make, sequences):
    model = keras.Sequential([keras.Input((STEPS, FEATURES)),
                              L.Bidirectional(make(return_sequences=sequences), merge_mode=merge_mode)])
    for w in model.weights:
        w.assign(rng.normal(scale=0.5, size=w.shape))
    prepared, _, plans = planning.prepare(model, quantization="int8", batch_size=4)
    assert plans[0].becomes == "unrolled over time in both directions, weights stored once"
    assert isinstance(prepared.layers[0], planning.UnrolledBidirectional)
    x = rng.normal(size=(4, STEPS, FEATURES)).astype("float32")
    np.testing.assert_allclose(prepared(x).numpy(), model(x).numpy(), atol=1e-5)


def test_bidirectional_plans_in_float_modes():
    model = keras.Sequential([keras.Input((STEPS, FEATURES)), L.Bidirectional(L.LSTM(3)), L.Dense(2)])
    _, _, plans = planning.prepare(model, quantization="float32", batch_size=1)
    assert str(plans[0]).endswith("(Bidirectional(LSTM)) -> 2 UNIDIRECTIONAL_SEQUENCE_LSTM (fused, one "
                                  "per direction) and REVERSE_V2")
    gru = keras.Sequential([keras.Input((STEPS, FEATURES)), L.Bidirectional(L.GRU(3))])
    assert planning.prepare(gru, quantization="dynamic", batch_size=1)[2][0].becomes == "2 WHILE loops"


@pytest.mark.parametrize("make, why", [
    (lambda: [L.Masking(), L.Bidirectional(L.GRU(3))], "its input carries a Keras mask"),
    (lambda: [L.Bidirectional(L.GRU(3), merge_mode=None), L.Concatenate()], "merge_mode=None"),
    (lambda: [L.Bidirectional(L.RNN(L.LSTMCell(3)))], "it has no int8 plan"),
], ids=["masked", "merge_none", "rnn_lstm_cell"])
def test_bidirectional_loops_int8_cannot_take_are_refused_before_conversion(monkeypatch, rng, make, why):
    monkeypatch.setattr(tflite_module, "_convert", lambda *a, **k: pytest.fail("conversion started"))
    inputs = keras.Input((STEPS, FEATURES))
    hidden = inputs
    for layer in make():
        hidden = layer(hidden)
    model = keras.Model(inputs, L.Dense(2)(hidden))
    with pytest.raises(ValueError, match=r"\(Bidirectional\(.*\)\) would become two WHILE loops, and full-int8 "
                                         rf"conversion of WHILE loops crashes TFLite \(TF 2.21\); {why}"):
        converters.to_tflite(model, quantization="int8", representative_data=_data(8, 0)[0])
