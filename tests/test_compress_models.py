"""compress() end to end on models written the way Keras tutorials write them (issue 13).

Four of the model table's shapes, each trained for a few epochs: a token classifier with an
Embedding and a Bidirectional LSTM, a SimpleRNN, a CNN-LSTM over frames, and stacked LSTMs
with BatchNormalization and a pooled Dense head. The budgets are tiny, so the bound may be
missed: ``on_miss="best"`` makes every run go through stripping and fine-tuning.
"""

import numpy as np
import pytest

import converters
import tf_vib
from tf_vib._keras import keras
from tf_vib.layers import is_vib_layer

L = keras.layers
N, T = 96, 8


def _tokens(rng):
    x = rng.integers(1, 30, (N, T)).astype("int32")
    y = (x[:, 0] % 3).astype("int64")
    return x, y


def _sequences(rng, shape=(T, 4)):
    x = rng.normal(size=(N, *shape)).astype("float32")
    y = (x.reshape(N, -1)[:, 0] > 0).astype("int64") + (x.reshape(N, -1)[:, 1] > 1).astype("int64")
    return x, y


def text_bilstm():
    model = keras.Sequential([keras.Input((T,), dtype="int32"), L.Embedding(30, 8), L.Bidirectional(L.LSTM(8)),
                              L.Dense(3)])
    return model, _tokens


def simple_rnn():
    return keras.Sequential([keras.Input((T, 4)), L.SimpleRNN(12), L.Dense(3)]), _sequences


def cnn_lstm():
    frames = keras.Input((4, 8, 8, 1))
    features = L.TimeDistributed(L.Conv2D(4, 3, activation="relu"))(frames)
    features = L.TimeDistributed(L.GlobalAveragePooling2D())(features)
    outputs = L.Dense(3)(L.LSTM(8)(features))
    return keras.Model(frames, outputs), lambda rng: _sequences(rng, (4, 8, 8, 1))


def stacked_batch_norm():
    model = keras.Sequential([
        keras.Input((T, 4)), L.LSTM(8, return_sequences=True), L.BatchNormalization(),
        L.LSTM(6, return_sequences=True), L.GlobalAveragePooling1D(), L.Dense(8, activation="relu"),
        L.Dropout(0.2), L.Dense(3),
    ])
    return model, _sequences


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.slow
@pytest.mark.parametrize("builder", [text_bilstm, simple_rnn, cnn_lstm, stacked_batch_norm],
                         ids=lambda b: b.__name__)
def test_compress_end_to_end(builder):
    rng = np.random.default_rng(0)
    model, data = builder()
    x, y = data(rng)
    model.compile(keras.optimizers.Adam(1e-2), LOSS)
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    weights = [w.copy() for w in model.get_weights()]
    result = tf_vib.compress(model, (x, y), epochs=3, finetune_epochs=2, batch_size=32, on_miss="best",
                             verbose=0, seed=0)
    small, report = result.model, result.report
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))
    assert not any(is_vib_layer(layer) for layer in small.layers)
    assert [t.dtype for t in small.inputs] == [t.dtype for t in model.inputs]
    assert small.output_shape == model.output_shape
    assert report.baseline.recurrent_params > 0
    assert [m["name"] for m in report.masks if "units" in m["masks"]]  # some units were masked
    assert report.bound_met or report.misses
    flat = converters.to_tflite(small, quantization="float32", batch_size=1)
    check = converters.verify(small, flat, x[:16], y[:16])
    assert check.passed, check
