"""compress() on Keras 3 models: they train as their tf_keras twins and come back in Keras 3,
compiled as the user compiled them, the user's model untouched."""

import numpy as np
import pytest

import tf_vib
from tf_vib import bridge

keras3 = pytest.importorskip("keras")

STEPS, FEATURES, UNITS = 6, 4, 12


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, STEPS, FEATURES)).astype("float32")
    return x, (x[:, :, 0].mean(axis=1) > 0).astype("int32")


@pytest.fixture(scope="module", params=["LSTM", "GRU"])
def compressed(request):
    keras3.utils.set_random_seed(0)
    x, y = _data()
    layer = getattr(keras3.layers, request.param)(UNITS)
    model = keras3.Sequential([keras3.Input((STEPS, FEATURES)), layer, keras3.layers.Dense(2)])
    model.compile(keras3.optimizers.Adam(1e-2), keras3.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    before = [w.copy() for w in model.get_weights()]
    result = tf_vib.compress(model, (x, y), epochs=3, finetune_epochs=2, on_miss="best", verbose=0)
    return request.param, model, before, result, x


def test_a_keras3_model_comes_back_in_keras3_compiled(compressed):
    kind, model, _, result, x = compressed
    assert bridge.is_keras3(result.model)
    assert type(result.model.layers[0]).__name__ == kind
    assert result.model.compiled and result.model.loss.get_config()["from_logits"]
    assert "accuracy" in [m.name for m in result.model.metrics] or result.model.compiled_metrics is not None


def test_the_keras3_result_equals_its_tf_keras_twin(compressed):
    _, _, _, result, x = compressed
    twin = bridge.to_tf_keras(result.model)
    np.testing.assert_allclose(result.model.predict(x[:16], verbose=0), twin.predict(x[:16], verbose=0),
                               atol=1e-5)
    # the report describes the model returned: its recurrent parameters
    assert result.report.stages[-1].params == twin.count_params()


def test_the_users_keras3_model_is_untouched(compressed):
    _, model, before, _, _ = compressed
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_a_keras3_loss_without_a_tf_keras_counterpart_is_refused_before_training():
    class Odd(keras3.losses.Loss):
        def call(self, y_true, y_pred):
            return keras3.ops.mean(y_pred)

    model = keras3.Sequential([keras3.Input((STEPS, FEATURES)), keras3.layers.LSTM(4), keras3.layers.Dense(2)])
    model.compile("adam", Odd())
    with pytest.raises(ValueError, match="`model`'s loss 'Odd' has no tf_keras counterpart"):
        tf_vib.compress(model, _data(), epochs=1, verbose=0)
