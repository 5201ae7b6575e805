"""VIBSchedule: KL ramp, tfmot (should_prune, sparsity) in graph mode, serialization, callback."""

import json

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
from helpers import set_mask

from tf_vib._keras import keras, tf
from tf_vib.compress._schedules import (
    VIBSchedule,
    VIBScheduleCallback,
    custom_objects,
    vib_layers,
    vib_scope,
)
from tf_vib.layers import FeatureMask, VIBGRUCell, VIBLSTMCell


def _data(n=40):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6, 5)).astype("float32"), rng.integers(0, 3, n)


def _vib_model():
    return keras.Sequential([
        keras.Input((6, 5)),
        keras.layers.RNN(VIBLSTMCell(8, kl_factor=0.5)),
        keras.layers.Dense(3),
    ])


def test_kl_weight_ramps_linearly_after_begin_step():
    schedule = VIBSchedule(2e-3, warmup_steps=10, begin_step=5)
    steps = [0, 5, 6, 10, 15, 100]
    values = [float(schedule.kl_weight(s)) for s in steps]
    np.testing.assert_allclose(values, [0, 0, 2e-4, 1e-3, 2e-3, 2e-3], rtol=1e-6, atol=1e-12)
    no_warmup = VIBSchedule(1e-3, begin_step=3)
    assert [float(no_warmup.kl_weight(s)) for s in (2, 3)] == pytest.approx([0.0, 1e-3])


def test_should_prune_and_sparsity_inside_tf_function():
    schedule = VIBSchedule(1e-4, harden_step=100, target_pruned_fraction=0.8,
                           begin_step=20, end_step=200, frequency=10)

    @tf.function
    def run(step):
        return schedule(step)

    results = {s: run(tf.constant(s, tf.int64)) for s in (0, 20, 25, 30, 60, 100, 150, 200, 210)}
    prune = {s: bool(r[0]) for s, r in results.items()}
    assert prune == {0: False, 20: True, 25: False, 30: True, 60: True, 100: True,
                     150: True, 200: True, 210: False}
    sparsity = {s: float(r[1]) for s, r in results.items()}
    p = 40 / 80  # step 60 lies halfway along the ramp from 20 to the harden step 100
    assert sparsity[0] == 0 and sparsity[20] == 0
    assert sparsity[60] == pytest.approx(0.8 * (1 - (1 - p) ** 3))
    assert sparsity[100] == pytest.approx(0.8) and sparsity[210] == pytest.approx(0.8)
    assert results[60][1].dtype == tf.float32


def test_sparsity_without_ramp_end_is_the_target_from_begin_step():
    schedule = VIBSchedule(1e-4, target_pruned_fraction=0.5, begin_step=10)
    assert [float(schedule.sparsity(s)) for s in (9, 10, 10**6)] == [0.0, 0.5, 0.5]


def test_config_round_trips_in_both_forms():
    schedule = VIBSchedule(3e-5, warmup_steps=7, harden_step=50, target_pruned_fraction=0.6,
                           begin_step=2, end_step=90, frequency=3)
    config = json.loads(json.dumps(schedule.get_config()))
    assert config["class_name"] == "tf_vib>VIBSchedule"
    assert VIBSchedule.from_config(config) == schedule
    assert VIBSchedule.from_config(config["config"]) == schedule
    assert keras.utils.deserialize_keras_object(config) == schedule
    assert custom_objects()["VIBSchedule"] is VIBSchedule
    assert custom_objects()["VIBLSTMCell"] is VIBLSTMCell


def test_pruned_model_saved_mid_training_loads_back(tmp_path):
    x, y = _data()
    schedule = VIBSchedule(1e-3, warmup_steps=4, target_pruned_fraction=0.5, end_step=20,
                           frequency=2)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(_vib_model(), pruning_schedule=schedule)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, epochs=1, batch_size=8, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), VIBScheduleCallback(schedule)])
    path = tmp_path / "mid_training.keras"
    pruned.save(path)
    with vib_scope():
        loaded = keras.models.load_model(path)
    wrapper = loaded.layers[0]
    assert wrapper.pruning_schedule == schedule
    assert isinstance(wrapper.layer.cell, VIBLSTMCell)
    assert int(wrapper.pruning_step) == int(pruned.layers[0].pruning_step) == 5
    np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6)


def test_vib_layers_are_found_through_wrappers_and_nested_models():
    inner = keras.Sequential([keras.Input((6, 5)), FeatureMask(name="fm")], name="inner")
    inputs = keras.Input((6, 5))
    x = inner(inputs)
    x = keras.layers.Bidirectional(keras.layers.RNN(VIBGRUCell(3)))(x)
    x = tfmot.sparsity.keras.prune_low_magnitude(keras.layers.RNN(VIBLSTMCell(4)))(x[:, None])
    model = keras.Model(inputs, x)
    kinds = sorted(type(layer).__name__ for layer in vib_layers(model))
    assert kinds == ["FeatureMask", "VIBGRUCell", "VIBGRUCell", "VIBLSTMCell"]


def test_callback_ramps_kl_weight_and_counts_steps():
    x, y = _data(40)
    model = _vib_model()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = VIBScheduleCallback(VIBSchedule(1e-2, warmup_steps=8))
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(float(model.layers[0].cell.kl_weight)))
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[callback, record])
    assert int(callback.step) == 10
    np.testing.assert_allclose(seen, [1e-2 * min(s, 8) / 8 for s in range(10)], rtol=1e-6)
    assert history.history["kl_weight"] == pytest.approx([1e-2 * 4 / 8, 1e-2])
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[callback])
    assert int(callback.step) == 15


def test_hardening_freezes_pruned_masks_at_zero_for_the_rest_of_training():
    x, y = _data(40)
    model = _vib_model()
    model.compile(keras.optimizers.Adam(0.05),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    masks = model.layers[0].cell.vib_masks
    pruned = np.arange(8) < 3
    set_mask(masks["o"], 1.0, np.where(pruned, 4.0, -9.0))  # log_alpha 4 > 0: pruned
    callback = VIBScheduleCallback(VIBSchedule(1e-3, harden_step=3))
    trace = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: trace.append(masks["o"].mu.numpy().copy()))
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[callback, record])
    trace = np.array(trace)
    # hardening happens at the end of batch 3, before later callbacks record it
    assert np.all(trace[:2][:, pruned] != 0), "before harden_step mu trains freely"
    assert np.all(trace[2:][:, pruned] == 0), "after harden_step pruned mu stays exactly 0"
    assert np.all(trace[-1][~pruned] != 0)
    np.testing.assert_array_equal(masks["o"].kept(), ~pruned)
    mu, log_sigma2 = masks["o"].mu.numpy(), masks["o"].log_sigma2.numpy()
    kept_kl = 0.5 * np.sum(np.log1p(mu[~pruned] ** 2 * np.exp(-log_sigma2[~pruned])))
    assert float(masks["o"].kl()) == pytest.approx(kept_kl, rel=1e-5)  # pruned units add no KL
    assert np.all(np.exp(0.5 * masks["o"].log_sigma2.numpy()[pruned]) < 2e-4)


def test_callback_needs_vib_layers():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="found no VIB layer"):
        model.fit(np.ones((4, 3)), np.ones(4), verbose=0,
                  callbacks=[VIBScheduleCallback(VIBSchedule(1e-3))])


@pytest.mark.parametrize("kwargs,match", [
    ({"kl_factor": -1.0}, r"`kl_factor` must be a finite number >= 0; received -1.0"),
    ({"kl_factor": "big"}, r"`kl_factor` must be a finite number >= 0; received 'big'"),
    ({"kl_factor": 1.0, "warmup_steps": 2.5}, r"`warmup_steps` must be an integer >= 0; received 2.5"),
    ({"kl_factor": 1.0, "target_pruned_fraction": 1.0}, r"`target_pruned_fraction` must be a finite number >= 0 and < 1; received 1.0"),
    ({"kl_factor": 1.0, "begin_step": 5, "end_step": 3}, r"`end_step` must be an integer >= 5 or -1"),
    ({"kl_factor": 1.0, "begin_step": 5, "harden_step": 3}, r"`harden_step` must be an integer >= 5; received 3"),
    ({"kl_factor": 1.0, "frequency": 0}, r"`frequency` must be an integer >= 1; received 0"),
])
def test_bad_arguments_name_the_argument_and_value(kwargs, match):
    kl_factor = kwargs.pop("kl_factor")
    with pytest.raises((ValueError, TypeError), match=match):
        VIBSchedule(kl_factor, **kwargs)
    with pytest.raises(TypeError, match="`schedule` must be a tf_vib.VIBSchedule"):
        VIBScheduleCallback("linear")
