"""strip_masks: exact equality of stripped and masked models, each fold rule, bad input."""

import numpy as np
import pytest
from helpers import all_weights, cell_factory, max_abs_diff, randomize_masks, set_mask

import tf_vib
from tf_vib._keras import keras
from tf_vib.layers import FeatureMask, SelectFeatures, VIBGRUCell, VIBLSTMCell

KINDS = ["lstm", "gru", "gru_v1"]
PRUNED, KEPT = 6.0, -6.0  # log_sigma2 values far above / below log_alpha 0 for mu ~ 1


def _x(shape=(6, 7, 5), seed=3):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _plain_kinds(model):
    return [type(layer).__name__ for layer in model.layers]


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_single_layer_with_dense_head(kind, return_sequences, rng):
    model = keras.Sequential([
        keras.Input((7, 5)),
        keras.layers.RNN(cell_factory(kind)(12), return_sequences=return_sequences),
        keras.layers.Dense(3),
    ])
    randomize_masks(model, rng)
    stripped = tf_vib.strip_masks(model)
    assert isinstance(stripped, keras.Sequential)
    assert _plain_kinds(stripped) == ["LSTM" if kind == "lstm" else "GRU", "Dense"]
    assert stripped.layers[0].units < 12
    assert max_abs_diff(model, stripped, _x()) <= 1e-5


@pytest.mark.parametrize("kind", KINDS)
def test_stacked_with_feature_mask_and_dense_mask(kind, rng):
    model = keras.Sequential([
        keras.Input((7, 5)),
        FeatureMask(),
        keras.layers.RNN(cell_factory(kind)(10), return_sequences=True),
        keras.layers.RNN(cell_factory(kind)(10)),
        keras.layers.Dense(8, activation="relu"),
        FeatureMask(),
        keras.layers.Dense(3),
    ])
    randomize_masks(model, rng)
    stripped, records = tf_vib.strip_masks(model, return_records=True)
    assert not any(tf_vib.layers.is_vib_layer(layer) for layer in stripped.layers)
    assert max_abs_diff(model, stripped, _x()) <= 1e-5
    by_name = {r.name: r for r in records}
    first_rnn = model.layers[1].name
    assert stripped.get_layer(first_rnn).units == by_name[first_rnn].units_kept
    hidden_dense = stripped.get_layer(model.layers[3].name)
    assert hidden_dense.units == by_name[model.layers[4].name].inputs_kept < 8


def test_functional_model_with_feature_mask_on_input_keeps_signature(rng):
    inputs = keras.Input((7, 5), name="frames")
    x = FeatureMask(name="input_mask")(inputs)
    x = keras.layers.RNN(VIBLSTMCell(9), name="lstm")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(x))
    randomize_masks(model, rng)
    set_mask(model.get_layer("input_mask").mask, [0.5, 1.0, 1.5, -0.7, 1.0], [KEPT, PRUNED, KEPT, KEPT, PRUNED])
    kept = model.get_layer("input_mask").mask.kept()
    np.testing.assert_array_equal(kept, [True, False, True, True, False])
    stripped = tf_vib.strip_masks(model)
    assert stripped.input_shape == (None, 7, 5)
    assert isinstance(stripped.layers[1], SelectFeatures)
    assert stripped.layers[1].indices == np.flatnonzero(kept).tolist()
    assert stripped.get_layer("lstm").cell.kernel.shape[0] == kept.sum()
    assert max_abs_diff(model, stripped, _x()) <= 1e-5

    small_input = tf_vib.strip_masks(model, input_features="kept")
    indices = tf_vib.kept_input_features(model)["frames"]
    np.testing.assert_array_equal(indices, np.flatnonzero(kept))
    assert small_input.input_shape == (None, 7, len(indices))
    x = _x()
    np.testing.assert_allclose(
        small_input.predict(x[..., indices], verbose=0), model.predict(x, verbose=0), atol=1e-5
    )


# Rows of the folding table, docs/method.md section 2.2: (kind, {gate: (mu, log_sigma2)} for unit 0, dead?)
FOLD_ROWS = [
    ("lstm", {"o": (1.0, PRUNED)}, True),
    ("lstm", {"i": (1.0, PRUNED)}, True),
    ("lstm", {"c": (1.0, PRUNED)}, True),
    ("lstm", {"o": (0.37, KEPT)}, False),
    ("lstm", {"f": (1.0, PRUNED)}, False),
    ("lstm", {"f": (0.6, KEPT), "i": (1.7, KEPT), "c": (0.4, KEPT)}, False),
    ("gru", {"h": (1.0, PRUNED)}, True),
    ("gru", {"h": (-1.6, KEPT)}, False),
    ("gru", {"r": (0.45, KEPT)}, False),
    ("gru", {"r": (1.0, PRUNED)}, False),
    ("gru", {"z": (1.0, PRUNED)}, False),
    ("gru", {"z": (0.3, KEPT)}, False),
    ("gru_v1", {"r": (0.45, KEPT)}, False),
    ("gru_v1", {"z": (1.0, PRUNED)}, False),
]


@pytest.mark.parametrize("kind,unit0,dead", FOLD_ROWS)
def test_each_fold_rule_is_exact(kind, unit0, dead):
    model = keras.Sequential([
        keras.Input((7, 5)), keras.layers.RNN(cell_factory(kind)(4)), keras.layers.Dense(3),
    ])
    cell = model.layers[0].cell
    for gate, mask in cell.vib_masks.items():
        mu = np.array([1.0, 0.8, 1.3, 0.5])
        log_sigma2 = np.full(4, KEPT)
        if gate in unit0:
            mu[0], log_sigma2[0] = unit0[gate]
        set_mask(mask, mu, log_sigma2)
    stripped = tf_vib.strip_masks(model)
    assert stripped.layers[0].units == (3 if dead else 4)
    assert max_abs_diff(model, stripped, _x()) <= 1e-5


def test_threshold_and_min_units(rng):
    model = keras.Sequential([
        keras.Input((7, 5)), keras.layers.RNN(VIBGRUCell(6)), keras.layers.Dense(3),
    ])
    cell = model.layers[0].cell
    for _, mask in cell.vib_masks.items():
        set_mask(mask, 1.0, KEPT)
    set_mask(cell.vib_masks["h"], 1.0, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert tf_vib.strip_masks(model, threshold=2.5).layers[0].units == 2
    with pytest.raises(ValueError, match=r"remove all 6 units of layer 'rnn'.*log_alpha 1.*threshold > 1"):
        tf_vib.strip_masks(model)
    kept_two = tf_vib.strip_masks(model, min_units=2)
    assert kept_two.layers[0].units == 2
    np.testing.assert_allclose(
        kept_two.predict(_x(), verbose=0),
        tf_vib.strip_masks(model, threshold=2.5).predict(_x(), verbose=0),
        atol=1e-6,
    )


def test_input_model_is_not_modified(rng):
    model = keras.Sequential([
        keras.Input((7, 5)), FeatureMask(), keras.layers.RNN(VIBLSTMCell(6)), keras.layers.Dense(3),
    ])
    randomize_masks(model, rng)
    before, layers_before = all_weights(model), list(model.layers)
    stripped = tf_vib.strip_masks(model)
    stripped.layers[-1].kernel.assign(np.zeros(stripped.layers[-1].kernel.shape))
    assert list(model.layers) == layers_before
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_other_layers_are_copied_not_shared(rng):
    model = keras.Sequential([
        keras.Input((7, 5)),
        keras.layers.Dense(4, activation="tanh"),
        keras.layers.RNN(VIBLSTMCell(6)),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(3),
    ])
    randomize_masks(model, rng)
    stripped = tf_vib.strip_masks(model)
    assert stripped.layers[0] is not model.layers[0]
    assert max_abs_diff(model, stripped, _x()) <= 1e-5


def test_stripped_lstm_runs_as_fixed_batch_standard_layer(rng):
    model = keras.Sequential([
        keras.Input((7, 5), batch_size=1), keras.layers.RNN(VIBLSTMCell(6)), keras.layers.Dense(3),
    ])
    randomize_masks(model, rng)
    stripped = tf_vib.strip_masks(model)
    assert stripped.input_shape == (1, 7, 5)
    assert type(stripped.layers[0]) is keras.layers.LSTM


def test_bad_input_errors():
    import keras as keras3

    k3 = keras3.Sequential([keras3.Input((3,)), keras3.layers.Dense(2)])
    with pytest.raises(TypeError, match="Keras 3 model.*needs a tf_keras"):
        tf_vib.strip_masks(k3)

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="subclassed model 'Sub'"):
        tf_vib.strip_masks(Sub())
    with pytest.raises(TypeError, match="must be a tf_keras.Model"):
        tf_vib.strip_masks("model.keras")
    plain = keras.Sequential([keras.Input((7, 5)), keras.layers.RNN(VIBLSTMCell(3)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"`threshold` must be a finite number >= 0.*received -1.0"):
        tf_vib.strip_masks(plain, threshold=-1.0)
    with pytest.raises(ValueError, match="`input_features` must be 'all'.*received 'some'"):
        tf_vib.strip_masks(plain, input_features="some")
    with pytest.raises(ValueError, match="`min_units` must be an integer >= 0; received -2"):
        tf_vib.strip_masks(plain, min_units=-2)


def test_layer_that_cannot_carry_pruned_units_is_named(rng):
    model = keras.Sequential([
        keras.Input((7, 5)),
        keras.layers.RNN(VIBLSTMCell(6), return_sequences=True),
        keras.layers.LayerNormalization(name="norm"),
        keras.layers.LSTM(3),
    ])
    randomize_masks(model, rng)
    with pytest.raises(ValueError, match=r"through layer 'norm' \(LayerNormalization\)"):
        tf_vib.strip_masks(model)


def test_vib_layer_as_model_output_is_refused(rng):
    model = keras.Sequential([keras.Input((7, 5)), keras.layers.RNN(VIBLSTMCell(6))])
    randomize_masks(model, rng)
    with pytest.raises(ValueError, match="is a model output"):
        tf_vib.strip_masks(model)


def test_summary_counts_equal_the_stripped_model(rng):
    model = keras.Sequential([
        keras.Input((7, 5)),
        FeatureMask(name="inputs"),
        keras.layers.RNN(VIBLSTMCell(10), name="lstm"),
        keras.layers.Dense(6, activation="relu", name="hidden"),
        FeatureMask(name="hidden_mask"),
        keras.layers.Dense(3, name="head"),
    ])
    randomize_masks(model, rng)
    report = tf_vib.summary(model)
    stripped = tf_vib.strip_masks(model)
    assert report.params_after == stripped.count_params()
    rows = {r.name: r for r in report.records}
    lstm = stripped.get_layer("lstm")
    assert rows["lstm"].units_kept == lstm.units
    assert rows["lstm"].params_before == 4 * 10 * (5 + 10 + 1)
    assert rows["lstm"].params_after == lstm.count_params()
    assert rows["lstm"].inputs_kept == lstm.cell.kernel.shape[0]
    assert rows["hidden"].units_kept == stripped.get_layer("hidden").units
    text = str(report)
    assert "lstm" in text and f"{rows['lstm'].units_kept}/10" in text
    data = report.to_dict()
    assert data["bytes_float32_after"] == 4 * stripped.count_params()
    assert data["bytes_int8_after"] == stripped.count_params()


def _op_names(flat):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flat)
    return {op["op_name"] for op in interpreter._get_ops_details()}


def test_stripped_lstm_converts_to_the_fused_tflite_op(rng):
    from tf_vib._keras import tf

    model = keras.Sequential([
        keras.Input((7, 5), batch_size=1), FeatureMask(), keras.layers.RNN(VIBLSTMCell(6)),
        keras.layers.Dense(3),
    ])
    randomize_masks(model, rng)
    stripped = tf_vib.strip_masks(model)
    function = tf.function(lambda x: stripped(x)).get_concrete_function(tf.TensorSpec((1, 7, 5), tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], stripped)
    ops = _op_names(converter.convert())
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in ops
    assert "WHILE" not in ops
