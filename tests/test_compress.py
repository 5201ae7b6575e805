"""compress(): warm start, a plain smaller model, a report that matches it, bad input."""

import json
import sys
import warnings

import numpy as np
import pytest
from helpers import all_weights

import tf_vib
from tf_vib._keras import keras, tf
from tf_vib.compress._iss import iss_group_norms
from tf_vib.compress._training import TwoRateTrainer
from tf_vib.compress._vib_stage import trim_plan
from tf_vib.wrap import add_vib_masks

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _data(n=150, seed=0):
    """Class = which of the first three features has the largest mean; features 3-4 are noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6, 5)).astype("float32")
    y = np.argmax(x[:, :, :3].mean(axis=1), axis=1)
    return x, y


def _trained(layer, epochs=15):
    model = keras.Sequential([keras.Input((6, 5)), layer, keras.layers.Dense(3)])
    model.compile(keras.optimizers.Adam(1e-2), LOSS, metrics=["accuracy"])
    x, y = _data()
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def lstm_model():
    keras.utils.set_random_seed(0)
    return _trained(keras.layers.LSTM(12))


@pytest.mark.parametrize("make", [
    lambda: keras.Sequential([keras.Input((6, 5)), keras.layers.LSTM(7, return_sequences=True),
                              keras.layers.GRU(6), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")]),
    lambda: keras.Sequential([keras.Input((6, 5)), keras.layers.GRU(6, reset_after=False), keras.layers.Dense(3)]),
    lambda: _functional(),
], ids=["stacked", "gru_v1", "functional"])
def test_warm_start_reproduces_the_original(make):
    model = make()
    vib = add_vib_masks(model)
    x, _ = _data(20)
    np.testing.assert_allclose(vib.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert any(isinstance(layer, tf_vib.layers.FeatureMask) for layer in vib.layers)
    assert not any(tf_vib.layers.is_vib_layer(layer) for layer in model.layers)


def _functional():
    inputs = keras.Input((6, 5))
    x = keras.layers.Dense(8, activation="tanh")(inputs)
    x = keras.layers.LSTM(6)(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def test_compress_returns_a_plain_smaller_model_and_a_matching_report(lstm_model, tmp_path, capsys):
    before = all_weights(lstm_model)
    x, y = _data(150, seed=1)
    x_test, y_test = _data(100, seed=2)
    result = tf_vib.compress(
        lstm_model, (x, y), test_data=(x_test, y_test), epochs=8, finetune_epochs=3,
        kl_factor=0.05, mask_learning_rate=0.1, max_accuracy_drop=0.05, verbose=1,
        warmup_epochs=5,  # kl_factor 0.05 (6x the default) on the default 2-epoch ramp over-prunes (39% masked)
    )
    small = result.model
    assert not any(tf_vib.layers.is_vib_layer(layer) for layer in small.layers)
    kinds = [type(layer) for layer in small.layers]
    assert kinds[-2:] == [keras.layers.LSTM, keras.layers.Dense]
    assert kinds[:-2] in ([], [tf_vib.layers.SelectFeatures])  # noise features may be gone
    assert small.count_params() < lstm_model.count_params()
    for a, b in zip(before, lstm_model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    report = result.report
    assert [s.stage for s in report.stages] == ["baseline", "vib", "finetune"]
    assert report.final.params == small.count_params()
    assert report.final.recurrent_params == small.layers[-2].count_params()
    assert report.baseline.params == lstm_model.count_params()
    rows = {r["name"]: r for r in report.layers}
    assert rows[small.layers[-2].name]["units_kept"] == small.layers[-2].units
    assert report.final.val_accuracy >= report.baseline.val_accuracy - 0.05
    test_accuracy = np.mean(np.argmax(small.predict(x_test, verbose=0), -1) == y_test)
    assert report.final.test_accuracy == pytest.approx(test_accuracy)
    assert "vib" in result.histories and "finetune" in result.histories

    data = json.loads(report.to_json(tmp_path / "report.json"))
    assert data["stages"][-1]["params"] == small.count_params()
    assert json.loads((tmp_path / "report.json").read_text()) == data
    png = report.plot(tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "recurrent params" in str(report)
    assert report.bound_met and report.misses == [] and report.bound == report.accuracy_floor
    assert f"Bound: validation accuracy >= {report.bound:.4f}" in str(report)
    assert [s.bound_met for s in report.stages] == [None, True, True]
    out = capsys.readouterr().out
    assert "[tf-vib] stage 1/4 baseline" in out and "[tf-vib] stage 4/4 finetune" in out


def test_compress_accepts_datasets_and_holds_out_validation(lstm_model):
    x, y = _data(120, seed=3)
    batched = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))
    result = tf_vib.compress(lstm_model, batched, validation_data=unbatched, epochs=1,
                             finetune_epochs=0, verbose=0)
    assert result.report.baseline.val_accuracy == pytest.approx(
        np.mean(np.argmax(lstm_model.predict(x, verbose=0), -1) == y))
    streamed = [layer for layer in result.vib_model.submodules if hasattr(layer, "mask_settings")]
    # the 120 streamed training samples counted (8 batches of 16, not read into arrays)
    assert streamed and [m.mask_settings.kl_factor for m in streamed] == pytest.approx([1 / 120] * len(streamed))
    held_out = tf_vib.compress(lstm_model, (x, y), epochs=1, finetune_epochs=0, verbose=0,
                               validation_fraction=0.25)
    assert held_out.report.stages[0].extra == {}
    assert len(held_out.histories["vib"]["loss"]) == 1
    masks = [layer for layer in held_out.vib_model.submodules if hasattr(layer, "mask_settings")]
    # 90 training rows after the 25% hold-out: under the cap, so 1 / n_train
    assert masks and [m.mask_settings.kl_factor for m in masks] == pytest.approx([1 / 90] * len(masks))


def test_default_kl_factor_caps_the_sample_count_and_scales_with_width():
    from tf_vib.compress._core import masked_width
    from tf_vib.compress._defaults import KL_SAMPLES_CAP, default_kl_factor

    assert default_kl_factor(90) == pytest.approx(1 / 90)
    assert default_kl_factor(KL_SAMPLES_CAP) == pytest.approx(1 / KL_SAMPLES_CAP)
    assert default_kl_factor(1078) == pytest.approx(1 / KL_SAMPLES_CAP)
    assert default_kl_factor(134, 2048) == pytest.approx(1 / 134 / 16)
    assert default_kl_factor(134, 12) == pytest.approx(1 / 134)
    wide = keras.Sequential([keras.Input((5, 300)), keras.layers.GRU(16), keras.layers.Dense(40),
                             keras.layers.Dense(3)])
    assert masked_width(wide) == 300
    many_classes = keras.Sequential([keras.Input((5, 4)), keras.layers.LSTM(16), keras.layers.Dense(40),
                                     keras.layers.Dense(1000)])  # the output Dense carries no mask
    assert masked_width(many_classes) == 40
    narrow = keras.Sequential([keras.Input((5, 4)), keras.layers.LSTM(16), keras.layers.Dense(3)])
    assert masked_width(narrow) == 16


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started before the arguments were checked")

    monkeypatch.setattr(TwoRateTrainer, "fit", refuse)


@pytest.mark.parametrize("mutate,match", [
    (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x), y),
     r"`train_data` inputs contain 1 NaN or infinite values \(first at index \(0, 1, 2\)\)"),
    (lambda x, y: (x, y + 1), r"labels range over \[1, 3\], but the model has 3 outputs"),
    (lambda x, y: (x[:, :, :4], y), r"inputs have shape \(150, 6, 4\), but the model expects \(batch, 6, 5\)"),
    (lambda x, y: (x, y[:10]), "150 inputs but 10 labels"),
    (lambda x, y: (x, y.astype("float32") + 0.5), "labels must be integer class indices"),
])
def test_bad_data_fails_before_training(lstm_model, no_training, mutate, match):
    x, y = mutate(*_data())
    with pytest.raises(ValueError, match=match):
        tf_vib.compress(lstm_model, (x, y), verbose=0)


@pytest.mark.parametrize("kwargs,match", [
    ({"epochs": -1}, "`epochs` must be an integer >= 0; received -1"),
    ({"kl_factor": 0.0}, "`kl_factor` must be a finite number > 0; received 0.0"),
    ({"mask_learning_rate": float("nan")}, "`mask_learning_rate` must be a finite number > 0"),
    ({"thresholds": [-1.0]}, r"`thresholds` must be a non-empty list of numbers >= 0; received \[-1.0\]"),
    ({"validation_fraction": 1.5}, "`validation_fraction` must be a finite number > 0 and < 1; received 1.5"),
    ({"masked_gates": "oz"}, "masked_gates"),
    ({"unit_multiple": 0}, "`unit_multiple` must be an integer >= 1; received 0"),
    ({"warmup_epochs": 2.5}, "`warmup_epochs` must be an integer >= 0 or None; received 2.5"),
    ({"warmup_epochs": -1}, "`warmup_epochs` must be an integer >= 0 or None; received -1"),
    ({"unit_multiple": 4.0}, "`unit_multiple` must be an integer >= 1; received 4.0"),
    ({"on_miss": "largest"}, "`on_miss` must be one of 'original', 'best'; received 'largest'"),
    ({"metric": "nope"}, "`metric` must be None, 'accuracy', 'loss', a Keras metric name or object, or a "
                         "tf_vib.Scorer; received 'nope'"),
    ({"metric": "loss", "max_accuracy_drop": 0.01},
     "`max_accuracy_drop` applies to the accuracy metric; the metric here is 'sparse_categorical_crossentropy'"),
    ({"max_accuracy_drop": 0.01, "max_metric_drop": 0.02}, "give one of `max_accuracy_drop` and `max_metric_drop`"),
    ({"metric": "mae", "max_metric_drop": -1.0}, "`max_metric_drop` must be a finite number >= 0; received -1.0"),
])
def test_bad_arguments_fail_before_training(lstm_model, no_training, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tf_vib.compress(lstm_model, _data(), verbose=0, **kwargs)


def test_default_warmup_is_five_epochs_or_a_third_of_a_short_run():
    from tf_vib.compress._defaults import default_warmup_epochs

    assert [default_warmup_epochs(e) for e in (0, 1, 2, 3, 5, 8, 12, 14)] == [0, 0, 0, 1, 1, 2, 4, 4]
    assert [default_warmup_epochs(e) for e in (15, 16, 100)] == [5, 5, 5]  # long runs: as before


def test_a_warmup_as_long_as_training_warns_before_training(lstm_model, no_training):
    match = (r"warmup_epochs=5 >= epochs=4: the KL weight ramps over 5 epochs .* never reaches kl_factor "
             r"\(it peaks at 75% of it, on the last batch\) .* pass warmup_epochs=1")  # 4 batches: 15/20
    with pytest.warns(UserWarning, match=match), pytest.raises(AssertionError, match="training started"):
        tf_vib.compress(lstm_model, _data(), epochs=4, warmup_epochs=5, verbose=0)
    for kwargs in ({"epochs": 4}, {"epochs": 4, "warmup_epochs": 3}, {"epochs": 4, "warmup_epochs": 5, "vib": False,
                                                                      "iss": 1e-3}):
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="warmup_epochs")
            with pytest.raises(AssertionError, match="training started"):
                tf_vib.compress(lstm_model, _data(), verbose=0, **kwargs)


def test_a_run_too_short_for_any_mask_to_move_warns_before_training(lstm_model, no_training):
    # 120 training samples, batch 32: 4 batches an epoch; a mask needs about 1 / 0.01 = 100 updates
    match = (r"the VIB masks get 8 updates \(2 epochs x 4 batches\) at mask_learning_rate=0.01; .* takes about "
             r"100 updates: nothing will be pruned by the masks. Pass epochs >= 25")
    with pytest.warns(UserWarning, match=match), pytest.raises(AssertionError, match="training started"):
        tf_vib.compress(lstm_model, _data(), epochs=2, verbose=0)
    for kwargs in ({"epochs": 2, "mask_learning_rate": 0.125}, {"epochs": 25}, {"epochs": 2, "vib": False, "iss": 1e-3}):
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="the VIB masks get")
            with pytest.raises(AssertionError, match="training started"):
                tf_vib.compress(lstm_model, _data(), verbose=0, **kwargs)


@pytest.mark.parametrize("warmup_epochs,full", [(None, True), (3, False)], ids=["default", "too_long"])
def test_a_short_run_reaches_the_full_kl_weight_unless_told_otherwise(lstm_model, capsys, warmup_epochs, full):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = tf_vib.compress(lstm_model, _data(), epochs=3, finetune_epochs=0, kl_factor=1e-2,
                                 mask_learning_rate=0.1, warmup_epochs=warmup_epochs, thresholds=[0.0],
                                 unit_multiple=1, verbose=1)
    weights = result.histories["vib"]["kl_weight"]
    assert ("KL warm-up 1 epochs" if full else "KL warm-up 3 epochs") in capsys.readouterr().out
    assert (weights[-1] == pytest.approx(1e-2)) is full  # the default ramp is 3 // 3 = 1 epoch
    assert bool(result.report.notes) is not full
    assert ("Note: warmup_epochs=3 >= epochs=3" in str(result.report)) is not full
    assert result.report.to_dict()["notes"] == result.report.notes


def test_a_regressor_takes_targets_not_labels_and_no_accuracy(no_training):
    model = keras.Sequential([keras.Input((24, 1)), keras.layers.LSTM(3), keras.layers.Dense(1)])
    model.compile(loss="mse")
    x, y = _series(20, 0)
    with pytest.raises(ValueError, match="`metric` 'accuracy' needs a classifier .* trained on 'mean_squared_error'"):
        tf_vib.compress(model, (x, y), metric="accuracy", verbose=0)
    with pytest.raises(ValueError, match=r"`train_data` targets have shape \(20, 2\), but the model outputs \(batch, 1\)"):
        tf_vib.compress(model, (x, np.stack([y, y], 1)), verbose=0)
    with pytest.raises(ValueError, match="`validation_data` targets contain 1 NaN or infinite values"):
        tf_vib.compress(model, (x, y), validation_data=(x, np.where(np.arange(20) == 3, np.nan, y)), verbose=0)


def test_model_without_layers_to_compress_and_uncompiled_model(no_training):
    flat = keras.Sequential([keras.Input((6, 5)), keras.layers.GlobalAveragePooling1D()])
    with pytest.raises(ValueError, match="has nothing tf-vib can compress"):
        tf_vib.compress(flat, (np.zeros((4, 6, 5)), np.zeros(4, int)), loss=LOSS, verbose=0)
    uncompiled = keras.Sequential([keras.Input((6, 5)), keras.layers.LSTM(3), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="`loss` is required when `model` is not compiled"):
        tf_vib.compress(uncompiled, _data(), verbose=0)
    with pytest.raises(TypeError, match="must be an \\(x, y\\) tuple"):
        tf_vib.compress(uncompiled, np.zeros((4, 6, 5)), loss=LOSS, verbose=0)


@pytest.mark.parametrize("kwargs,match", [
    ({"vib": False}, "with vib=False, name at least one stage"),
    ({"magnitude_sparsity": 1.0}, "`magnitude_sparsity` must be a finite number > 0 and < 1; received 1.0"),
    ({"clusters": 1}, "`clusters` must be an integer >= 2; received 1"),
    ({"iss": -0.1}, "`iss` must be a finite number > 0; received -0.1"),
    ({"low_rank": 0}, "`low_rank` must be an integer >= 1; received 0"),
    ({"low_rank": 1.5}, "`low_rank` must be a finite number > 0 and < 1"),
    ({"low_rank": 2, "low_rank_kernels": "all"},
     "`low_rank_kernels` must be one of 'input', 'recurrent', 'both'; received 'all'"),
    ({"distill": True, "distill_temperature": 0}, "`distill_temperature` must be a finite number > 0"),
])
def test_bad_stage_arguments_fail_before_training(lstm_model, no_training, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tf_vib.compress(lstm_model, _data(), verbose=0, **kwargs)


def _six_units_two_silent(silent):
    """A trained LSTM(6) classifier whose units ``silent`` reach neither the Dense layer nor
    the other units (zero Dense and recurrent rows): removing them changes no output."""
    keras.utils.set_random_seed(1)
    model = _trained(keras.layers.LSTM(6), epochs=25)
    lstm, dense = model.layers
    kernel, recurrent, bias = lstm.get_weights()
    recurrent[silent] = 0.0
    lstm.set_weights([kernel, recurrent, bias])
    weights, dense_bias = dense.get_weights()
    weights[silent] = 0.0
    dense.set_weights([weights, dense_bias])
    return model


def _noisiest(units, monkeypatch):
    """compress() ranks the LSTM's units as if ``units`` were the least informative."""
    module = sys.modules["tf_vib.compress._vib_stage"]
    real = module.alive_units

    def ranked(cell, threshold):
        alive, _ = real(cell, threshold)
        return alive, np.isin(np.arange(cell.units), units).astype(float)

    monkeypatch.setattr(module, "alive_units", ranked)


TRIM = dict(epochs=0, finetune_epochs=0, max_accuracy_drop=0.0, verbose=0)


def test_trim_to_a_multiple_of_four_drops_the_least_informative_units(monkeypatch):
    model = _six_units_two_silent([4, 5])
    _noisiest([4, 5], monkeypatch)
    x, y = _data(150, seed=1)
    result = tf_vib.compress(model, (x, y), **TRIM)
    lstm = result.model.layers[-2]
    assert lstm.units == 4
    np.testing.assert_allclose(result.model.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    kernel = model.layers[0].get_weights()[0]
    kept_columns = np.concatenate([g * 6 + np.arange(4) for g in range(4)])
    np.testing.assert_array_equal(lstm.get_weights()[0], kernel[:, kept_columns])
    trim = result.report.trim
    assert trim["accepted"] and trim["layers"] == {"lstm": {"units": 6, "trimmed_units": 4}}
    assert trim["params"] == result.model.count_params() == result.report.final.params
    assert [r["units_kept"] for r in result.report.layers if r["kind"] == "LSTM"] == [4]
    assert result.report.to_dict()["trim"] == trim
    assert model.layers[0].units == 6  # the user's model is untouched


def test_a_trim_that_loses_accuracy_is_not_kept(monkeypatch):
    model = _six_units_two_silent([2, 3, 4, 5])  # units 0 and 1 carry everything
    _noisiest([0, 1], monkeypatch)
    x, y = _data(150, seed=1)
    result = tf_vib.compress(model, (x, y), **TRIM)
    assert result.report.baseline.val_accuracy > 0.6  # units 0 and 1 do carry the classes
    assert result.model.layers[-2].units == 6
    np.testing.assert_allclose(result.model.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    # the VIB model and the report describe the chosen model, not the refused trim
    assert [r["units_kept"] for r in result.report.layers if r["kind"] == "LSTM"] == [6]
    assert tf_vib.strip_masks(result.vib_model, threshold=result.threshold, min_units=1).layers[-2].units == 6
    trim = result.report.trim
    assert not trim["accepted"] and trim["layers"] == {"lstm": {"units": 6, "trimmed_units": 4}}
    # the target is the chosen model's own accuracy (here the original's: nothing was removed)
    assert trim["fine_tuned_accuracy"] < trim["target"] == pytest.approx(result.report.baseline.val_accuracy)


@pytest.mark.parametrize("settings", [{"unit_multiple": 1}, {"unit_multiple": 8},
                                      {"masked_gates": {"lstm": "f", "gru": "h"}}],
                         ids=["off", "below_one_multiple", "no_mask_removes_units"])
def test_no_trim_when_off_or_not_possible(monkeypatch, settings):
    model = _six_units_two_silent([4, 5])
    _noisiest([4, 5], monkeypatch)
    result = tf_vib.compress(model, _data(150, seed=1), **settings, **TRIM)
    assert result.model.layers[-2].units == 6 and result.report.trim is None


@pytest.mark.parametrize("alive,score,multiple,kept", [
    # 5 alive of 8 (units 1, 4 and 6 already gone, 1 and 6 the noisiest): unit 3 goes
    ([1, 0, 1, 1, 0, 1, 0, 1], [0, 9, 1, 5, 2, 3, 9, 4], 4, [1, 0, 1, 0, 0, 1, 0, 1]),
    # ties: the later unit goes first
    ([1, 1, 1, 1, 1, 1], [2, 2, 2, 2, 1, 1], 4, [1, 1, 0, 0, 1, 1]),
    ([1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0], 4, None),  # already a multiple
    ([1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], 4, None),  # below one multiple
    ([1] * 7, [0] * 7, 4, None),  # nearer 8 than 4: left to the converter's padding
    ([1] * 12, list(range(12)), 8, [1] * 8 + [0] * 4),  # 12 -> 8: half a multiple
    ([1] * 13, list(range(13)), 8, None),
])
def test_trim_plan_drops_the_noisiest_alive_units(alive, score, multiple, kept):
    result = trim_plan(np.array(alive, bool), np.array(score, float), multiple)
    if kept is None:
        assert result is None
    else:
        np.testing.assert_array_equal(result, np.array(kept, bool))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::tf_vib.BoundNotMetWarning")
def test_every_stage_alone_and_combined(lstm_model):
    x, y = _data(150, seed=1)
    # budgets this small may miss the bound: on_miss="best" keeps (and labels) every stage's model
    common = dict(epochs=3, finetune_epochs=2, verbose=0, kl_factor=0.05, on_miss="best")
    norms = next(iter(iss_group_norms(lstm_model).values()))
    runs = {
        # a threshold at the median group norm: the group lasso then zeroes about half the units
        "iss alone": dict(vib=False, iss=0.05, iss_threshold=float(np.median(norms))),
        "low rank alone": dict(vib=False, low_rank=2, low_rank_kernels="both"),
        "magnitude alone": dict(vib=False, magnitude_sparsity=0.5),
        "clusters alone": dict(vib=False, clusters=4),
        "vib + iss + magnitude + clusters, distilled": dict(
            iss=0.01, magnitude_sparsity=0.5, clusters=8, distill=True),
    }
    for name, kwargs in runs.items():
        result = tf_vib.compress(lstm_model, (x, y), **common, **kwargs)
        small, stages = result.model, [s.stage for s in result.report.stages]
        assert not any(tf_vib.layers.is_vib_layer(layer) for layer in small.layers), name
        assert result.report.final.params == small.count_params(), name
        assert result.report.bound_met == (not result.report.misses), name
        if "magnitude_sparsity" in kwargs:
            assert stages[-1 if "clusters" not in kwargs else -2] == "magnitude"
            kernel = [layer for layer in small.layers if isinstance(layer, keras.layers.LSTM)][0].cell.kernel
            assert np.mean(kernel.numpy() == 0) >= 0.45, name
        if "clusters" in kwargs:
            assert stages[-1] == "cluster"
            lstm = [layer for layer in small.layers if isinstance(layer, keras.layers.LSTM)][0]
            assert len(np.unique(lstm.cell.kernel.numpy())) <= kwargs["clusters"] + 1, name
            assert result.report.final.extra["clustered_bytes"] < 4 * small.count_params()
        if "low_rank" in kwargs:
            assert any(layer.name.endswith("_low_rank") for layer in small.layers), name
            cells = [type(getattr(layer, "cell", None)).__name__ for layer in small.layers]
            assert "LowRankLSTMCell" in cells, name
        if name == "iss alone":
            assert stages[:3] == ["baseline", "iss", "finetune"]
            lstm = [layer for layer in small.layers if isinstance(layer, keras.layers.LSTM)][0]
            assert 3 <= lstm.units <= 9, "units whose group norm fell below the threshold are removed"


def _series(n, seed):
    """Windows of 24 steps of a noisy sine, and the value that follows each."""
    rng = np.random.default_rng(seed)
    t = np.arange(n + 24) * 0.3
    s = (np.sin(t) + 0.1 * rng.normal(size=t.shape)).astype("float32")
    return np.stack([s[i:i + 24] for i in range(n)])[..., None], s[24:24 + n]


@pytest.mark.slow
def test_an_lstm_forecaster_compresses_within_its_mse_bound():
    model = keras.Sequential([keras.Input((24, 1)), keras.layers.LSTM(32), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    train, val, test = _series(240, 0), _series(80, 1), _series(60, 2)
    model.fit(*train, epochs=10, batch_size=32, verbose=0)
    baseline_mse = model.evaluate(*val, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tf_vib.BoundNotMetWarning)
        result = tf_vib.compress(model, train, validation_data=val, test_data=test, epochs=10, finetune_epochs=5,
                                 max_metric_drop=0.05 * baseline_mse, verbose=0)
    report, small = result.report, result.model
    assert report.metric == "mean_squared_error" and not report.higher_is_better
    assert report.baseline.val_score == pytest.approx(baseline_mse, rel=1e-5)
    assert report.bound == pytest.approx(1.05 * baseline_mse, rel=1e-5)
    assert small.count_params() < model.count_params()
    loss, score = small.evaluate(*val, verbose=0)  # compiled with the loss and the metric
    assert loss == pytest.approx(score) and loss <= 1.05 * baseline_mse
    assert report.final.test_score == pytest.approx(small.evaluate(*test, verbose=0)[0], rel=1e-5)
    assert report.final.val_accuracy is None and report.bound_met and report.misses == []
    assert "val mean_squared_error" in str(report)
