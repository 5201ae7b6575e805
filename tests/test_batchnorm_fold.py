"""An inference-mode BatchNormalization folded into the layer that reads it (converters/plan/batchnorm.py).

The fold is checked on Keras models with statistics far from the identity (it must predict
as the model within 1e-5, without the BatchNormalization), on the BatchNormalizations it must
leave (recorded as kept), and on the trained ``LSTM -> BatchNormalization -> LSTM`` whose full
int8 file missed `converters.verify`'s target before the fold.
"""

import numpy as np
import pytest
from helpers import all_weights

import converters
import converters.plan as planning
from tf_vib._keras import keras

L = keras.layers
T, F = 8, 3


def _normalize_oddly(model, rng):
    """Every BatchNormalization's four vectors set away from the identity (in place: the
    test's own model)."""
    for layer in model.layers:
        norm = layer.layer if isinstance(layer, L.TimeDistributed) else layer
        if not isinstance(norm, L.BatchNormalization):
            continue
        values = {"gamma": lambda n: rng.uniform(0.5, 2.0, n), "beta": lambda n: rng.normal(size=n),
                  "moving_mean": lambda n: 2.0 * rng.normal(size=n),
                  "moving_variance": lambda n: rng.uniform(0.05, 3.0, n)}
        norm.set_weights([values[w.name.split("/")[-1].split(":")[0]](w.shape[0]) for w in norm.weights])


def _chain(layers, shape=(T, F)):
    return lambda: keras.Sequential([keras.Input(shape), *layers()])


FOLDABLE = {
    "lstm_bn_lstm": _chain(lambda: [L.LSTM(6, return_sequences=True), L.BatchNormalization(),
                                    L.LSTM(5, name="reader"), L.Dense(3)]),
    "input_bn_lstm": _chain(lambda: [L.BatchNormalization(), L.LSTM(5, name="reader"), L.Dense(3)]),
    "bn_gru_reset_after": _chain(lambda: [L.BatchNormalization(), L.GRU(5, name="reader"), L.Dense(3)]),
    "bn_gru_reset_before_no_bias": _chain(lambda: [L.BatchNormalization(),
                                                   L.GRU(5, reset_after=False, use_bias=False, name="reader")]),
    "bn_simple_rnn_no_bias": _chain(lambda: [L.BatchNormalization(), L.SimpleRNN(5, use_bias=False, name="reader")]),
    "bn_gru_reset_after_no_bias": _chain(lambda: [L.BatchNormalization(), L.GRU(5, use_bias=False, name="reader")]),
    "lstm_bn_bidirectional_concat": _chain(lambda: [L.LSTM(6, return_sequences=True), L.BatchNormalization(),
                                                    L.Bidirectional(L.LSTM(4), name="reader"), L.Dense(3)]),
    "bn_bidirectional_gru_sum": _chain(lambda: [L.BatchNormalization(),
                                                L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode="sum",
                                                                name="reader"), L.GlobalAveragePooling1D()]),
    "bn_rnn_lstm_cell": _chain(lambda: [L.BatchNormalization(), L.RNN(L.LSTMCell(5), name="reader")]),
    "lstm_bn_dense_no_bias": _chain(lambda: [L.LSTM(6), L.BatchNormalization(), L.Dense(3, use_bias=False,
                                                                                       name="reader")]),
    "bn_conv1d": _chain(lambda: [L.BatchNormalization(scale=False), L.Conv1D(4, 3, name="reader"), L.LSTM(5)]),
    "lstm_bn_time_distributed_dense": _chain(lambda: [L.LSTM(6, return_sequences=True), L.BatchNormalization(center=False),
                                                      L.TimeDistributed(L.Dense(3), name="reader")]),
    "time_distributed_bn_conv1d": _chain(lambda: [L.TimeDistributed(L.BatchNormalization()),
                                                  L.TimeDistributed(L.Conv1D(4, 2), name="reader"),
                                                  L.TimeDistributed(L.Flatten()), L.LSTM(5)], shape=(T, 6, F)),
}


def _batch_norms(model):
    return [layer for layer in model.layers
            if isinstance(layer.layer if isinstance(layer, L.TimeDistributed) else layer, L.BatchNormalization)]


@pytest.mark.parametrize("name", FOLDABLE)
def test_a_folded_model_predicts_as_the_model_without_its_batch_normalization(name, rng):
    model = FOLDABLE[name]()
    _normalize_oddly(model, rng)
    weights, config = all_weights(model), model.get_config()
    folded, plans = planning.fold_batch_norms(model, max_rounding_growth=None)  # exact whatever the growth
    x = rng.normal(size=(16, *model.input_shape[1:])).astype("float32")
    assert float(np.max(np.abs(folded(x) - model(x)))) <= 1e-5
    assert not _batch_norms(folded) and len(folded.layers) == len(model.layers) - 1
    assert [("BatchNormalization" in p.kind, p.folded_into) for p in plans] == [(True, "reader")]
    after = all_weights(model)  # the model passed in is unchanged
    assert model.get_config() == config and all(np.array_equal(a, b) for a, b in zip(after, weights, strict=True))


def _two_readers():
    x = keras.Input((T, F))
    norm = L.BatchNormalization(name="shared_norm")(x)
    return keras.Model(x, [L.LSTM(4)(norm), L.LSTM(3)(norm)])


KEPT = {
    "two_readers": (_two_readers, "its output feeds 2 layers"),
    "time_axis": (_chain(lambda: [L.BatchNormalization(axis=1), L.LSTM(5)]), "not the last (feature) axis"),
    "masked": (_chain(lambda: [L.Masking(), L.BatchNormalization(), L.LSTM(5)]), "a Keras mask flows through it"),
    "bidirectional_no_bias": (_chain(lambda: [L.BatchNormalization(), L.Bidirectional(L.LSTM(4, use_bias=False))]),
                              "use_bias=False"),
    "conv1d_same": (_chain(lambda: [L.BatchNormalization(), L.Conv1D(4, 3, padding="same"), L.LSTM(5)]),
                    "padding='same'"),
}


@pytest.mark.parametrize("name", KEPT)
def test_a_batch_normalization_that_cannot_fold_is_kept_and_says_why(name, rng):
    make, why = KEPT[name]
    model = make()
    _normalize_oddly(model, rng)
    folded, plans = planning.fold_batch_norms(model)
    assert folded is model
    assert len(plans) == 1 and plans[0].folded_into is None and plans[0].becomes.startswith("kept (")
    assert why in plans[0].becomes, plans[0].becomes


def test_a_batch_normalization_of_an_offset_input_is_kept_where_int8_weights_would_round_coarsely(rng):
    model = _chain(lambda: [L.BatchNormalization(), L.LSTM(5)])()
    model.layers[0].set_weights([np.ones(F), np.zeros(F), np.array([100.0, 0.0, 9.8]), np.array([25.0, 1.0, 0.25])])
    growth, feature = planning.batchnorm.rounding_growth(model.layers[0])
    assert feature == 0 and growth == pytest.approx(10 * np.sqrt(1 + 20 ** 2), rel=1e-2)  # a spread 10, mean 20 std
    folded, plans = planning.fold_batch_norms(model)
    assert folded is model and plans[0].folded_into is None and "more coarsely at feature 0" in plans[0].becomes
    model.layers[0].set_weights([np.ones(F), np.zeros(F), np.array([0.5, 0.0, -0.5]), np.array([1.0, 0.5, 2.0])])
    assert planning.fold_batch_norms(model)[1][0].folded_into == model.layers[1].name  # growth 2.1


def test_the_file_records_each_batch_normalization_folded_or_kept(rng):
    x = keras.Input((T, F))
    h = L.LSTM(6, return_sequences=True, name="first")(L.BatchNormalization(axis=1, name="over_time")(x))
    h = L.LSTM(5, name="second")(L.BatchNormalization(name="between")(h))
    model = keras.Model(x, L.Dense(3)(h))
    _normalize_oddly(model, rng)
    model.get_layer("between").set_weights([np.full(6, 1.2), np.full(6, 0.1), np.linspace(-0.3, 0.3, 6),
                                            np.linspace(0.5, 1.0, 6)])  # rounding growth 1.5: it folds
    data = rng.normal(size=(128, T, F)).astype("float32")
    files = converters.to_tflite_many(model, ["float32", "int8"], representative_data=data, isolate=False)
    assert "batch_normalization" not in (converters.describe_tflite(files["float32"]).tf_vib or {})  # float keeps it
    info = converters.describe_tflite(files["int8"])
    records = {r["layer"]: r for r in info.tf_vib["batch_normalization"]}
    assert records["between"]["folded_into"] == "second"
    assert records["over_time"]["folded_into"] is None and "not the last" in records["over_time"]["why"]
    assert "BatchNormalization folded into the layer reading it: between -> second; kept: over_time" in str(info)
    assert converters.verify(model, files["float32"], data, quantization="float32").passed


def _task(rng, n):
    """3 classes from a sum over time, a product of neighbouring steps and a late window."""
    x = rng.normal(size=(n, T, 4)).astype("float32")
    scores = np.stack([x[:, :, 0].sum(1), (x[:, 1:, 1] * x[:, :-1, 2]).sum(1), 1.5 * x[:, -3:, 3].sum(1)], axis=1)
    return x, scores.argmax(axis=1)


def test_the_trained_lstm_batch_normalization_lstm_int8_file_now_meets_its_target(monkeypatch):
    rng = np.random.default_rng(0)
    x, y = _task(rng, 1024)
    test_x, _ = _task(rng, 256)
    model = keras.Sequential([keras.Input((T, 4)), L.LSTM(8, return_sequences=True), L.BatchNormalization(),
                              L.LSTM(8), L.Dense(3)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=20, batch_size=32, verbose=0)
    folded = converters.verify(model, converters.to_tflite(model, quantization="int8", representative_data=x[:256], isolate=False),
                               test_x, quantization="int8")
    monkeypatch.setattr(planning, "fold_batch_norms", lambda m: (m, []))  # the converter before the fold
    kept = converters.verify(model, converters.to_tflite(model, quantization="int8", representative_data=x[:256], isolate=False),
                             test_x, quantization="int8")
    # measured: same class 98.0% -> 100%, mean difference 0.042 -> 0.017
    assert not kept.passed and folded.passed, (str(kept), str(folded))
    assert folded.mean_abs_diff < 0.75 * kept.mean_abs_diff
