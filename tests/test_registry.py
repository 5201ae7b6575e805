"""The layer registry and the mask plan: roles, placement, decisions made before training."""

import numpy as np
import pytest
from helpers import max_abs_diff, randomize_masks

import tf_vib
from tf_vib._keras import keras, tf
from tf_vib.layers import VIBRNN, FeatureMask
from tf_vib.registry import BREAKER, CARRIER, KERNEL, RECURRENT, rule_of
from tf_vib.wrap import mask_plan

L = keras.layers


def _built(layer, shape):
    layer(keras.Input(shape))
    return layer


@pytest.mark.parametrize("layer", [
    L.LSTM(3), L.GRU(3), L.SimpleRNN(3), L.RNN(L.LSTMCell(3)), L.Bidirectional(L.GRU(3)),
], ids=lambda layer: type(layer).__name__)
def test_recurrent_role(layer):
    assert rule_of(layer).role == RECURRENT


@pytest.mark.parametrize("layer", [L.Dense(3), L.Conv1D(3, 2), L.TimeDistributed(L.Dense(3))],
                         ids=lambda layer: type(layer).__name__)
def test_kernel_role(layer):
    assert rule_of(layer).role == KERNEL


@pytest.mark.parametrize("layer, linear", [
    (L.Dropout(0.1), True), (L.GlobalAveragePooling1D(), True), (L.Masking(), True),
    (L.Activation("linear"), True), (L.Concatenate(), True), (L.TimeDistributed(L.Dropout(0.1)), True),
    (L.Activation("relu"), False), (L.ReLU(), False), (L.GlobalMaxPooling1D(), False),
    (_built(L.BatchNormalization(), (4, 3)), False),
], ids=lambda value: type(value).__name__ if not isinstance(value, bool) else str(value))
def test_carrier_role(layer, linear):
    rule = rule_of(layer)
    assert rule.role == CARRIER
    assert rule.linear is linear


@pytest.mark.parametrize("layer, reason", [
    (L.LayerNormalization(), "LayerNormalization"), (L.Activation("softmax"), "softmax"),
    (L.Flatten(), "Flatten"), (L.Masking(mask_value=-1.0), "mask_value=-1.0"),
    (L.TimeDistributed(L.Flatten()), "TimeDistributed"), (L.MultiHeadAttention(1, 2), "MultiHeadAttention"),
    (_built(L.BatchNormalization(axis=1), (4, 3)), "BatchNormalization"),
], ids=lambda value: type(value).__name__ if not isinstance(value, str) else value)
def test_breaker_role(layer, reason):
    rule = rule_of(layer)
    assert rule.role == BREAKER
    assert reason in rule.reason


def _op_layer(op):
    """The TFOpLambda layer a tensor operation makes in a functional graph."""
    return op(keras.Input((4,)))._keras_history.layer


#: The kinds of a keras.applications backbone (MobileNetV3, EfficientNet) and their roles.
CNN_CARRIERS = [
    (L.GlobalAveragePooling2D(), True), (L.GlobalAveragePooling2D(keepdims=True), True),
    (L.AveragePooling2D(), True), (L.ZeroPadding2D(), True), (L.Rescaling(1 / 255.0), True),
    (L.Add(), True), (L.SpatialDropout2D(0.1), True), (_built(L.Reshape((1, 1, 4)), (4,)), True),
    (_op_layer(lambda x: x * (1.0 / 6.0)), True),
    (L.GlobalMaxPooling2D(), False), (L.MaxPooling2D(), False), (L.Rescaling(1 / 127.5, offset=-1.0), False),
    (L.DepthwiseConv2D(3), False), (L.Multiply(), False), (L.ReLU(6.0), False),
    (L.Activation("hard_sigmoid"), False), (L.Activation("swish"), False), (L.Activation("sigmoid"), False),
    (_op_layer(lambda x: x + 3.0), False), (_op_layer(keras.activations.swish), False),
    (L.TimeDistributed(_built(L.BatchNormalization(), (4, 4, 3))), False),
    (L.TimeDistributed(L.DepthwiseConv2D(3)), False),
]
CNN_BREAKERS = [
    (L.DepthwiseConv2D(3, depth_multiplier=2), "depth_multiplier=2"),
    (_built(L.Reshape((2, 2)), (4,)), "Reshape to (2, 2)"),
    (_op_layer(lambda x: x + np.arange(4.0, dtype="float32")), "TFOpLambda '__operators__.add'"),
    (_op_layer(lambda x: tf.reduce_sum(x, axis=-1, keepdims=True)), "'math.reduce_sum'"),
    (L.TimeDistributed(keras.Sequential([keras.Input((4,)), L.Dense(2)])), "TimeDistributed(Sequential)"),
]


@pytest.mark.parametrize("layer", [L.Conv2D(3, 2), L.TimeDistributed(L.Conv2D(3, 2))],
                         ids=["Conv2D", "TimeDistributed(Conv2D)"])
def test_cnn_kernel_role(layer):
    assert rule_of(layer).role == KERNEL


@pytest.mark.parametrize("layer, linear", CNN_CARRIERS,
                         ids=[f"{type(layer).__name__}-{i}" for i, (layer, _) in enumerate(CNN_CARRIERS)])
def test_cnn_carrier_role(layer, linear):
    rule = rule_of(layer)
    assert (rule.role, rule.linear) == (CARRIER, linear)


@pytest.mark.parametrize("layer, reason", CNN_BREAKERS,
                         ids=[f"{type(layer).__name__}-{i}" for i, (layer, _) in enumerate(CNN_BREAKERS)])
def test_cnn_breaker_role(layer, reason):
    rule = rule_of(layer)
    assert rule.role == BREAKER
    assert reason in rule.reason


@pytest.mark.slow
@pytest.mark.parametrize("backbone, unknown", [
    (lambda: keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, include_top=False,
                                                 pooling="avg"), set()),
    (lambda: keras.applications.EfficientNetB0(input_shape=(32, 32, 3), weights=None, include_top=False,
                                               pooling="avg"), {"Normalization"}),
], ids=["MobileNetV3Small", "EfficientNetB0"])
def test_every_kind_of_a_pi_backbone_has_a_role(backbone, unknown):
    """Only the input's per-channel Normalization is unknown to the registry; everything a
    block is made of (convolutions, BatchNormalization, the activations and hard-swish's
    TFOpLambda nodes, SE's pooling, Reshape and Multiply, the residual Add) is known."""
    model = backbone()
    breakers = {type(layer).__name__ for layer in model.layers[1:] if rule_of(layer).role == BREAKER}
    assert breakers == unknown
    assert {type(layer).__name__ for layer in model.layers if rule_of(layer).role == KERNEL} == {"Conv2D"}


def _decision(plan, name):
    return next(d for d in plan.decisions if d.name == name)


def test_plan_units_reaching_a_breaker_keep_their_width():
    model = keras.Sequential([keras.Input((5, 3)), L.LSTM(6, return_sequences=True, name="first"),
                              L.LayerNormalization(name="norm"), L.LSTM(4, name="second"), L.Dense(2)])
    plan = mask_plan(model)
    assert "first" not in plan.units and "second" in plan.units
    assert "norm" in _decision(plan, "first").reason and "LayerNormalization" in _decision(plan, "first").reason
    assert _decision(plan, "second").masks == "units, inputs"


def test_plan_no_mask_on_class_logits_before_softmax():
    model = keras.Sequential([keras.Input((5, 3)), L.LSTM(6, name="lstm"), L.Dense(4, name="logits"),
                              L.Activation("softmax")])
    plan = mask_plan(model)
    assert plan.units == {"lstm": False}
    vib = tf_vib.add_vib_masks(model)
    masks = [layer for layer in vib.layers if isinstance(layer, FeatureMask)]
    assert [m.name for m in masks] == ["lstm_input_mask"]


@pytest.mark.parametrize("between, hard", [
    ([L.GlobalAveragePooling1D()], False),
    ([L.Dropout(0.3), L.GlobalAveragePooling1D()], False),
    ([L.GlobalMaxPooling1D()], True),
    ([L.Activation("tanh"), L.GlobalAveragePooling1D()], True),
    ([L.BatchNormalization(), L.GlobalAveragePooling1D()], True),
], ids=["average", "dropout", "max", "tanh", "batch_norm"])
def test_plan_hard_masks_behind_carriers_a_scale_does_not_pass(between, hard, rng):
    model = keras.Sequential([keras.Input((5, 3)), L.LSTM(6, return_sequences=True, name="lstm"), *between,
                              L.Dense(2)])
    assert mask_plan(model).units == {"lstm": hard}
    vib = tf_vib.add_vib_masks(model)
    assert vib.get_layer("lstm").cell.hard_gates == ("o" if hard else "")
    randomize_masks(vib, rng)
    x = rng.normal(size=(4, 5, 3)).astype("float32")
    small = tf_vib.strip_masks(vib, min_units=1)
    assert small.get_layer("lstm").units < 6
    assert max_abs_diff(vib, small, x) <= 1e-5


@pytest.mark.parametrize("norm", [L.BatchNormalization, lambda **kw: L.TimeDistributed(L.BatchNormalization(), **kw)],
                         ids=["BatchNormalization", "TimeDistributed(BatchNormalization)"])
def test_plan_batch_norm_after_units_with_trained_statistics(norm, rng):
    model = keras.Sequential([keras.Input((5, 3)), L.LSTM(6, return_sequences=True, name="lstm"),
                              norm(name="norm"), L.LSTM(4, name="second"), L.Dense(2)])
    layer = model.get_layer("norm")
    layer.set_weights([rng.uniform(0.5, 2.0, w.shape).astype("float32") for w in layer.get_weights()])
    assert mask_plan(model).units["lstm"] is True
    vib = tf_vib.add_vib_masks(model)
    randomize_masks(vib, rng)
    small = tf_vib.strip_masks(vib, min_units=1)
    assert small.get_layer("norm").get_weights()[0].shape[0] == small.get_layer("lstm").units < 6
    assert max_abs_diff(vib, small, rng.normal(size=(4, 5, 3)).astype("float32")) <= 1e-5


def _trained_statistics(layer, rng):
    layer.set_weights([rng.uniform(0.5, 2.0, w.shape).astype("float32") * rng.choice([-1.0, 1.0], w.shape)
                       if i < 3 else rng.uniform(0.5, 2.0, w.shape).astype("float32")
                       for i, w in enumerate(layer.get_weights())])  # gamma, beta, mean of either sign


def test_constants_of_removed_units_fold_into_every_kind_of_reader(rng):
    """Removed units read as BatchNormalization's (or a sigmoid's) constant: a Dense, an LSTM
    and a GRU without a bias, a GRU, a Bidirectional, a Conv1D with padding='valid', and an
    LSTM behind a FeatureMask (the units concatenated with the input) fold them into their
    biases."""
    inputs = keras.Input((5, 3))
    seq = L.LSTM(6, return_sequences=True, name="lstm")(inputs)
    norm = L.BatchNormalization(name="norm")(seq)
    outputs = [
        L.Dense(2, use_bias=False, name="no_bias")(L.Dropout(0.1)(L.GlobalAveragePooling1D()(norm))),
        L.Dense(2, name="head_gru")(L.GRU(3, name="gru")(L.Activation("sigmoid")(norm))),
        L.Dense(2, name="head_bi")(L.Bidirectional(L.LSTM(3), name="bi")(norm)),
        L.Dense(2, name="head_conv")(L.GlobalMaxPooling1D()(L.Conv1D(3, 2, padding="valid", name="conv")(norm))),
        L.Dense(2, name="head_reader")(L.LSTM(3, name="reader")(L.Concatenate()([norm, inputs]))),
        L.Dense(2, name="head_lstm_no_bias")(L.LSTM(3, use_bias=False, name="lstm_no_bias")(norm)),
        L.Dense(2, name="head_gru_no_bias")(L.GRU(3, use_bias=False, name="gru_no_bias")(norm)),
    ]
    model = keras.Model(inputs, outputs)
    _trained_statistics(model.get_layer("norm"), rng)
    plan = mask_plan(model)
    assert plan.units["lstm"] is True
    vib = tf_vib.add_vib_masks(model)
    assert isinstance(vib.get_layer("reader_input_mask"), FeatureMask)
    randomize_masks(vib, rng)
    small = tf_vib.strip_masks(vib, min_units=1)
    assert small.get_layer("lstm").units < 6
    for name in ("no_bias", "lstm_no_bias", "gru_no_bias"):
        assert small.get_layer(name).use_bias, name  # turned on to hold the constants
    x = rng.normal(size=(4, 5, 3)).astype("float32")
    masked, stripped = vib.predict(x, verbose=0), small.predict(x, verbose=0)
    naive = tf_vib.strip_masks(vib, min_units=1)  # what the constants are worth: drop them again
    naive.get_layer("no_bias").set_weights(naive.get_layer("no_bias").get_weights()[:1] + [np.zeros(2, "float32")])
    assert np.max(np.abs(naive.predict(x, verbose=0)[0] - masked[0])) > 1e-3
    for a, b in zip(masked, stripped, strict=True):
        assert np.max(np.abs(a - b)) <= 1e-5


@pytest.mark.parametrize("reader, reason", [
    (lambda: L.Conv1D(3, 2, padding="same"), "padding='same'"),
    (lambda: L.Bidirectional(L.LSTM(3, use_bias=False, return_sequences=True), name="reader"), "use_bias=False"),
    (lambda: L.Masking(), "Masking"),
], ids=["conv_same", "bidirectional_no_bias", "masking"])
def test_plan_keeps_units_whose_constants_a_reader_cannot_absorb(reader, reason):
    model = keras.Sequential([keras.Input((5, 3)), L.LSTM(6, return_sequences=True, name="lstm"),
                              L.BatchNormalization(), reader(), L.GlobalAveragePooling1D(), L.Dense(2)])
    plan = mask_plan(model)
    assert "lstm" not in plan.units
    assert reason in _decision(plan, "lstm").reason and "constant" in _decision(plan, "lstm").reason


def test_plan_shared_and_stateful_layers_keep_their_units():
    shared = L.LSTM(4, name="shared")
    a, b = keras.Input((5, 3)), keras.Input((5, 3))
    out = L.Dense(2)(L.Concatenate()([shared(a), shared(b)]))
    plan = mask_plan(keras.Model([a, b], out))
    assert "shared" not in plan.units
    assert "more than once" in _decision(plan, "shared").reason
    stateful = keras.Sequential([keras.Input((5, 3), batch_size=2), L.LSTM(4, stateful=True, name="s"), L.Dense(2)])
    assert "stateful" in _decision(mask_plan(stateful), "s").reason


def test_nothing_to_compress_says_why():
    model = keras.Sequential([keras.Input((5, 3)), L.LSTM(4, name="only"), L.LayerNormalization()])
    with pytest.raises(ValueError, match="nothing tf-vib can compress.*only.*LayerNormalization"):
        tf_vib.add_vib_masks(model, feature_masks=False)


def test_integer_inputs_get_no_feature_mask_and_keep_their_dtype():
    model = keras.Sequential([keras.Input((6,), dtype="int32"), L.Embedding(10, 4, name="emb"), L.LSTM(3),
                              L.Dense(2)])
    vib = tf_vib.add_vib_masks(model)
    assert vib.inputs[0].dtype == "int32"
    assert isinstance(vib.layers[1], FeatureMask) and vib.layers[1].name == "lstm_input_mask"
    small = tf_vib.strip_masks(vib)
    assert small.inputs[0].dtype == "int32"


def test_call_arguments_and_layer_settings_are_carried(rng):
    inputs = keras.Input((6, 3))
    mask = L.Masking()(inputs)
    seq, h, c = L.LSTM(5, return_sequences=True, return_state=True, name="encoder")(mask)
    decoded = L.LSTM(5, dropout=0.2, recurrent_dropout=0.1, zero_output_for_mask=True, go_backwards=True,
                     activity_regularizer="l2", kernel_regularizer="l1", name="decoder")(seq, initial_state=[h, c])
    hidden = L.Dense(4, activation="relu", name="hidden")(decoded)
    outputs = L.Dense(2)(L.Dropout(0.1)(hidden, training=False))
    model = keras.Model(inputs, outputs)
    plan = mask_plan(model)
    assert "encoder" not in plan.units and "decoder" not in plan.units  # return_state, initial_state
    vib = tf_vib.add_vib_masks(model)
    randomize_masks(vib, rng)
    small = tf_vib.strip_masks(vib, min_units=1)
    x = rng.normal(size=(4, 6, 3)).astype("float32")
    x[:, -2:] = 0.0  # masked steps
    assert max_abs_diff(model, vib, x) > 0  # the random masks changed something
    assert max_abs_diff(vib, small, x) <= 1e-5
    decoder = small.get_layer("decoder")
    assert (decoder.dropout, decoder.recurrent_dropout, decoder.zero_output_for_mask, decoder.go_backwards) == (
        0.2, 0.1, True, True)
    assert decoder.activity_regularizer is not None and decoder.cell.kernel_regularizer is not None
    assert small.get_layer("hidden").units < 4


def test_vib_cells_take_the_users_dropout_and_train_with_it():
    model = keras.Sequential([keras.Input((5, 3)), L.GRU(4, dropout=0.3, recurrent_dropout=0.2, name="gru"),
                              L.Dense(2)])
    vib = tf_vib.add_vib_masks(model)
    layer = vib.get_layer("gru")
    assert isinstance(layer, VIBRNN) and (layer.cell.dropout, layer.cell.recurrent_dropout) == (0.3, 0.2)
    x = np.ones((2, 5, 3), "float32")
    noisy = [np.asarray(layer(x, training=True)) for _ in range(2)]
    assert not np.allclose(noisy[0], noisy[1])
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(layer(x)))


def test_users_model_is_untouched():
    model = keras.Sequential([keras.Input((5, 3)), L.Bidirectional(L.LSTM(4)), L.Dense(2)])
    weights, config = [w.copy() for w in model.get_weights()], model.get_config()
    tf_vib.strip_masks(tf_vib.add_vib_masks(model), min_units=1)
    assert model.get_config() == config
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))


def test_a_shared_kernel_layer_gets_no_feature_mask_and_strips(rng):
    a, b = keras.Input((3,)), keras.Input((3,))
    shared = L.Dense(2, name="shared")
    out = L.Concatenate()([shared(L.Dense(4, name="left")(a)), shared(L.Dense(4, name="right")(b))])
    model = keras.Model([a, b], L.Dense(2)(out))
    plan = mask_plan(model)
    assert not any(name.startswith("shared") for name in plan.feature_masks.values())
    vib = tf_vib.add_vib_masks(model)
    randomize_masks(vib, rng)
    x = [rng.normal(size=(4, 3)).astype("float32") for _ in range(2)]
    assert max_abs_diff(vib, tf_vib.strip_masks(vib), x) <= 1e-5



@pytest.mark.parametrize("activation,masked", [("tanh", True), ("relu", True), ("sigmoid", False)])
def test_a_summed_bidirectional_keeps_its_units_when_silencing_cannot_zero_them(activation, masked):
    # a unit dead in one direction is silenced there (its candidate zeroed): its state then
    # stays at activation(0), which is 0 for tanh and relu, 0.5 for a sigmoid
    rnn = L.Bidirectional(L.SimpleRNN(4, activation=activation), merge_mode="sum", name="bi")
    model = keras.Sequential([keras.Input((5, 3)), rnn, L.Dense(2)])
    plan = mask_plan(model)
    assert ("bi" in plan.units) == masked
    if not masked:
        reason = next(d.reason for d in plan.decisions if d.name == "bi")
        assert "activation='sigmoid', which is not 0 at 0" in reason
