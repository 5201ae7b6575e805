"""The Keras 3 bridge: every registry layer type across and back, model files of both Keras."""

import numpy as np
import pytest

from tf_vib import _bridge_graph as bridge_graph
from tf_vib import bridge
from tf_vib._keras import keras as tf_keras

keras = pytest.importorskip("keras")
L = keras.layers

SEQ = (5, 3)

#: (id, input shape, input dtype, the layer(s) applied to the input).
LAYERS = [
    ("lstm", SEQ, "float32", lambda x: L.LSTM(3, return_sequences=True)(x)),
    ("lstm_regularized", SEQ, "float32", lambda x: L.LSTM(
        3, kernel_regularizer=keras.regularizers.L2(0.01), recurrent_constraint=keras.constraints.MaxNorm(2.0),
        bias_initializer="ones", unit_forget_bias=False, go_backwards=True)(x)),
    ("gru_reset_after", SEQ, "float32", lambda x: L.GRU(3, return_sequences=True)(x)),
    ("gru_reset_before", SEQ, "float32", lambda x: L.GRU(3, reset_after=False)(x)),
    ("simple_rnn", SEQ, "float32", lambda x: L.SimpleRNN(3, activation="relu")(x)),
    ("rnn_lstm_cell", SEQ, "float32", lambda x: L.RNN(L.LSTMCell(3))(x)),
    ("rnn_gru_cell", SEQ, "float32", lambda x: L.RNN(L.GRUCell(3, reset_after=False))(x)),
    ("rnn_simple_cell", SEQ, "float32", lambda x: L.RNN(L.SimpleRNNCell(3), return_sequences=True)(x)),
    *[(f"bidirectional_{mode}", SEQ, "float32",
       lambda x, mode=mode: L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode=mode)(x))
      for mode in ("concat", "sum", "mul", "ave", None)],
    ("bidirectional_gru", SEQ, "float32", lambda x: L.Bidirectional(L.GRU(2))(x)),
    ("dense", SEQ, "float32", lambda x: L.Dense(4, activation="tanh", kernel_constraint="non_neg")(x)),
    ("conv1d", SEQ, "float32", lambda x: L.Conv1D(4, 2, padding="causal", dilation_rate=2)(x)),
    ("conv2d", (4, 4, 2), "float32", lambda x: L.Conv2D(3, (2, 2), strides=2, activation="relu")(x)),
    ("time_distributed_dense", SEQ, "float32", lambda x: L.TimeDistributed(L.Dense(2))(x)),
    ("time_distributed_conv2d", (2, 4, 4, 1), "float32", lambda x: L.TimeDistributed(L.Conv2D(2, 3))(x)),
    ("embedding_mask_zero", (6,), "int32", lambda x: L.LSTM(2)(L.Embedding(7, 3, mask_zero=True)(x))),
    ("embedding", (6,), "int32", lambda x: L.Embedding(7, 3)(x)),
    ("masking", SEQ, "float32", lambda x: L.GRU(2)(L.Masking(0.0)(x))),
    *[(name, SEQ, "float32", lambda x, layer=layer: layer()(x)) for name, layer in [
        ("dropout", lambda: L.Dropout(0.5)), ("spatial_dropout1d", lambda: L.SpatialDropout1D(0.3)),
        ("gaussian_noise", lambda: L.GaussianNoise(0.2)), ("gaussian_dropout", lambda: L.GaussianDropout(0.2)),
        ("alpha_dropout", lambda: L.AlphaDropout(0.2)), ("activity_regularization", lambda: L.ActivityRegularization(l1=0.1)),
        ("max_pooling1d", lambda: L.MaxPooling1D(2)), ("average_pooling1d", lambda: L.AveragePooling1D(2, padding="same")),
        ("global_max_pooling1d", lambda: L.GlobalMaxPooling1D()),
        ("global_average_pooling1d", lambda: L.GlobalAveragePooling1D(keepdims=True)),
        ("activation", lambda: L.Activation("swish")), ("relu", lambda: L.ReLU(max_value=0.5)),
        ("leaky_relu", lambda: L.LeakyReLU(0.2)), ("elu", lambda: L.ELU(0.7)), ("prelu", lambda: L.PReLU()),
        ("softmax", lambda: L.Softmax()), ("batch_normalization", lambda: L.BatchNormalization(epsilon=0.01)),
        ("layer_normalization", lambda: L.LayerNormalization()), ("flatten", lambda: L.Flatten()),
        ("reshape", lambda: L.Reshape((3, 5))), ("permute", lambda: L.Permute((2, 1))),
    ]],
    *[(name, (4, 4, 2), "float32", lambda x, layer=layer: layer()(x)) for name, layer in [
        ("spatial_dropout2d", lambda: L.SpatialDropout2D(0.3)), ("max_pooling2d", lambda: L.MaxPooling2D(2)),
        ("average_pooling2d", lambda: L.AveragePooling2D(2)), ("global_max_pooling2d", lambda: L.GlobalMaxPooling2D()),
        ("global_average_pooling2d", lambda: L.GlobalAveragePooling2D()),
    ]],
    ("repeat_vector", (3,), "float32", lambda x: L.RepeatVector(2)(x)),
    ("attention", SEQ, "float32", lambda x: L.Attention(use_scale=True)([x, x])),
    ("additive_attention", SEQ, "float32", lambda x: L.AdditiveAttention()([x, x])),
    ("multi_head_attention", SEQ, "float32", lambda x: L.MultiHeadAttention(2, 2)(x, x)),
]


def _randomize(model, seed=0):
    """Nonzero weights (positive, so a BatchNormalization variance is valid) of the same shapes."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(0.1, 0.9, w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


def _sample(model, seed=1):
    rng = np.random.default_rng(seed)
    samples = []
    for tensor in model.inputs:
        shape = (2, *tuple(tensor.shape)[1:])
        if "int" in str(tensor.dtype):
            ids = rng.integers(0, 7, shape)
            ids[:, -2:] = 0
            samples.append(ids.astype("int32"))
        else:
            samples.append(rng.normal(size=shape).astype("float32"))
    return samples


def _outputs(model, samples):
    outputs = model(samples if len(samples) > 1 else samples[0], training=False)
    return [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


def _rounded(value):
    """A config with its floats to 6 significant digits (tf_keras stores some as float32)."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value


def _assert_same(a, b, samples):
    assert [type(x).__name__ for x in a.layers] == [type(x).__name__ for x in b.layers]
    for old, new in zip(a.layers, b.layers, strict=True):
        assert _rounded(old.get_config()) == _rounded(new.get_config()), old.name
        for w_old, w_new in zip(old.get_weights(), new.get_weights(), strict=True):
            np.testing.assert_array_equal(w_old, w_new)
    for x, y in zip(_outputs(a, samples), _outputs(b, samples), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape, dtype, build", [row[1:] for row in LAYERS], ids=[row[0] for row in LAYERS])
def test_each_registry_layer_crosses_both_ways(shape, dtype, build):
    inputs = keras.Input(shape, dtype=dtype, name="features")
    original = _randomize(keras.Model(inputs, build(inputs), name="one_layer"))
    samples = _sample(original)

    internal = bridge.to_tf_keras(original)
    assert isinstance(internal, tf_keras.Model)
    assert internal.inputs[0].dtype.name == dtype and internal.layers[0].name == "features"
    for x, y in zip(_outputs(original, samples), _outputs(internal, samples), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)
    for old, new in zip(original.layers, internal.layers, strict=True):
        for w_old, w_new in zip(old.get_weights(), new.get_weights(), strict=True):
            np.testing.assert_array_equal(w_old, w_new)

    back = bridge.to_keras3(internal)
    assert bridge.is_keras3(back) and not bridge.is_keras3(internal)
    _assert_same(original, back, samples)
    _assert_same(internal, bridge.to_tf_keras(back), samples)


def test_nested_functional_model_with_two_inputs_shared_layers_and_merges_crosses_both_ways():
    encoder = keras.Sequential([keras.Input((5, 3)), L.LSTM(4, return_sequences=True), L.Dense(4)], name="encoder")
    steps, extra = keras.Input((5, 3), name="steps"), keras.Input((4,), name="extra")
    shared = L.Dense(4, name="shared")
    encoded = L.GlobalAveragePooling1D()(encoder(steps))
    merged = L.Concatenate()([shared(encoded), shared(extra)])
    summed = L.Add()([shared(encoded), extra])
    product = L.Multiply()([summed, extra])
    original = _randomize(keras.Model({"steps": steps, "extra": extra},
                                      [L.Dense(2, name="head")(merged), product], name="two_in"))
    rng = np.random.default_rng(2)
    sample = {"steps": rng.normal(size=(3, 5, 3)).astype("float32"), "extra": rng.normal(size=(3, 4)).astype("float32")}

    internal = bridge.to_tf_keras(original)
    back = bridge.to_keras3(internal)
    assert isinstance(internal.get_layer("encoder"), tf_keras.Sequential)
    assert bridge.is_keras3(back.get_layer("encoder"))
    assert len(internal.get_layer("shared")._inbound_nodes) == 3  # still one layer, called three times
    for model in (internal, back):
        for x, y in zip(original(sample), model(sample), strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, rtol=0)
        assert sorted(i.name for i in model.inputs) == ["extra", "steps"] or isinstance(model, tf_keras.Model)
    assert [layer.name for layer in back.layers] == [layer.name for layer in original.layers]


def test_a_layer_the_bridge_cannot_map_is_refused_before_anything_is_built():
    class Scale(L.Layer):
        def call(self, x):
            return 2.0 * x

    inputs = keras.Input((5, 3))
    model = keras.Model(inputs, L.Dense(2)(Scale(name="twice")(L.LSTM(3, return_sequences=True)(inputs))))
    built = []
    original_layer_from_config = bridge_graph.layer_from_config
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bridge_graph, "layer_from_config",
                      lambda *a, **k: built.append(a) or original_layer_from_config(*a, **k))
        with pytest.raises(ValueError, match=r"cannot map layer 'twice' \(Scale\).*LSTM, GRU, SimpleRNN"):
            bridge.to_tf_keras(model)
    assert built == []

    raw = keras.Input((3,))
    with pytest.raises(ValueError, match=r"cannot map layer 'add(_\d+)?' \(keras.ops Add outside any layer\)"):
        bridge.to_tf_keras(keras.Model(raw, L.Dense(2)(raw + 1.0)))
    with pytest.raises(TypeError, match="must be a Keras 3 model; received tf_keras"):
        bridge.to_tf_keras(tf_keras.Sequential([tf_keras.Input((3,)), tf_keras.layers.Dense(2)]))


def test_a_stripped_model_with_select_features_crosses_both_ways():
    from tf_vib.layers import SelectFeatures

    inputs = tf_keras.Input((5, 4), name="features")
    picked = SelectFeatures([0, 2, 3])(inputs)
    model = _randomize(tf_keras.Model(inputs, tf_keras.layers.Dense(2)(tf_keras.layers.LSTM(3)(picked))))
    samples = _sample(model)
    back = bridge.to_keras3(model)
    assert type(back.layers[1]).__name__ == "SelectFeatures" and back.layers[1].indices == [0, 2, 3]
    _assert_same(model, bridge.to_tf_keras(back), samples)
    np.testing.assert_allclose(_outputs(model, samples)[0], _outputs(back, samples)[0], atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def digits():
    import tf_vib

    return tf_vib.datasets.digits_rows()


def _trained_keras3(digits, recurrent, epochs=6):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(digits.input_shape), recurrent, L.Dense(10)])
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train, digits.y_train, epochs=epochs, batch_size=64, verbose=0)
    return model


def test_a_keras3_lstm_converts_to_the_fused_lstm_in_every_mode_and_verifies(digits):
    import converters

    model = _trained_keras3(digits, L.LSTM(12))
    files = converters.to_tflite_many(model, converters.QUANTIZATIONS, representative_data=digits.x_train[:200])
    for mode, flat in files.items():
        ops = converters.describe_tflite(flat).op_counts
        assert ops["UNIDIRECTIONAL_SEQUENCE_LSTM"] == 1 and "WHILE" not in ops, mode
        result = converters.verify(model, flat, digits.x_test, digits.y_test)
        assert result.passed, (mode, result)
    assert bridge.is_keras3(model)  # the user's model is used, not replaced


@pytest.mark.slow  # eight conversions
def test_a_keras3_gru_gets_the_plans_of_its_tf_keras_twin_in_every_mode(digits):
    import converters

    model = _trained_keras3(digits, L.GRU(8), epochs=2)
    sample = digits.x_train[:100]
    files = converters.to_tflite_many(model, converters.QUANTIZATIONS, representative_data=sample)
    twin = converters.to_tflite_many(bridge.to_tf_keras(model), converters.QUANTIZATIONS, representative_data=sample)
    for mode in converters.QUANTIZATIONS:
        assert converters.describe_tflite(files[mode]).op_counts == converters.describe_tflite(twin[mode]).op_counts
    assert converters.verify(model, files["float32"], digits.x_test[:100]).passed


def test_strip_masks_takes_a_keras3_model_and_gives_one_back():
    import tf_vib

    inputs = keras.Input((5, 3))
    model = _randomize(keras.Model(inputs, L.Dense(2)(L.LSTM(3)(inputs))))
    stripped = tf_vib.strip_masks(model)
    assert bridge.is_keras3(stripped) and stripped is not model
    samples = _sample(model)
    np.testing.assert_allclose(_outputs(model, samples)[0], _outputs(stripped, samples)[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"`model`: The Keras bridge cannot map layer 'twice'"):
        tf_vib.strip_masks(keras.Sequential([keras.Input((3,)), L.Lambda(lambda x: 2 * x, name="twice")]))


def _small(module):
    return module.Sequential([module.Input((5, 3), name="steps"), module.layers.GRU(3), module.layers.Dense(2)],
                             name="small")


@pytest.mark.parametrize("keras_of, name", [("keras3", "model.keras"), ("tf_keras", "model.keras"),
                                            ("keras3", "model.h5"), ("tf_keras", "model.h5"),
                                            ("tf_keras", "saved_model")])
def test_load_model_gives_the_model_back_in_the_keras_that_wrote_it(tmp_path, keras_of, name):
    model = _randomize(_small(keras if keras_of == "keras3" else tf_keras))
    path = tmp_path / name
    bridge.save_model(model, path)
    loaded = bridge.load_model(path)
    assert bridge.is_keras3(loaded) == (keras_of == "keras3")
    assert isinstance(loaded, tf_keras.Model) == (keras_of == "tf_keras")
    samples = _sample(model)
    np.testing.assert_allclose(_outputs(model, samples)[0], _outputs(loaded, samples)[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("keras_of, name", [("keras3", "l.keras"), ("tf_keras", "l.keras"),
                                            ("keras3", "l.h5"), ("tf_keras", "l.h5"), ("tf_keras", "l_saved")])
def test_lambda_layers_are_refused_in_safe_mode_in_every_format(tmp_path, keras_of, name):
    module = keras if keras_of == "keras3" else tf_keras
    model = module.Sequential([module.Input((3,)), module.layers.Lambda(lambda x: x * 2.0)])
    path = tmp_path / name
    bridge.save_model(model, path)
    with pytest.raises(ValueError, match=rf"{name}.*Lambda"):
        bridge.load_model(path)
    unsafe = bridge.load_model(path, safe_mode=False)
    np.testing.assert_allclose(np.asarray(unsafe(np.ones((1, 3), "float32"))), 2.0)


def test_files_tf_vib_cannot_rebuild_are_refused_naming_the_path(tmp_path):
    exported = tmp_path / "exported"
    _small(keras).export(str(exported), verbose=False)
    with pytest.raises(ValueError, match=r"exported' is a SavedModel without a Keras layer graph.*\.keras file"):
        bridge.load_model(exported)
    with pytest.raises(FileNotFoundError, match=r"missing\.keras' does not exist"):
        bridge.load_model(tmp_path / "missing.keras")
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk\.keras' is not a Keras \.keras file"):
        bridge.load_model(tmp_path / "junk.keras")
    with pytest.raises(ValueError, match=r"a Keras 3 model is saved as a \.keras"):
        bridge.save_model(_small(keras), tmp_path / "out")
