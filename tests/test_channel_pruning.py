"""Feature pruning carried into the CNN of a CNN-LSTM (issue 17, item 2).

A FeatureMask in front of the LSTM prunes per-frame CNN features; stripping removes the
matching output channels of the CNN's last convolution, through BatchNormalization,
activations, DepthwiseConv2D and pooling, and through a nested model inside
TimeDistributed. Where that is not exact the CNN keeps its width and the plan says why.
"""

import pytest
from helpers import max_abs_diff, randomize_masks

import converters
import tf_vib
from tf_vib._kept import mask_kept
from tf_vib._keras import keras
from tf_vib.layers import FeatureMask
from tf_vib.wrap import mask_plan

L = keras.layers
FRAMES = (3, 8, 8, 2)
EXACT = 1e-5


def _lstm_head(features):
    return L.Dense(2, name="head")(L.LSTM(4, name="lstm")(features))


def _conv_bn_relu_gap():
    return keras.Sequential([
        keras.Input(FRAMES), L.TimeDistributed(L.Conv2D(6, 3), name="conv"),
        L.TimeDistributed(L.BatchNormalization(), name="bn"), L.TimeDistributed(L.ReLU(), name="relu"),
        L.TimeDistributed(L.GlobalAveragePooling2D(), name="gap"), L.LSTM(4, name="lstm"), L.Dense(2, name="head"),
    ])


def _nested(block):
    frame = keras.Input(FRAMES[1:])
    cnn = keras.Model(frame, L.GlobalAveragePooling2D(name="gap")(block(frame)), name="cnn")
    clip = keras.Input(FRAMES)
    return keras.Model(clip, _lstm_head(L.TimeDistributed(cnn, name="frames")(clip)))


def _conv_depthwise_bn(x):
    x = L.Conv2D(6, 1, name="conv")(x)
    return L.BatchNormalization(name="bn")(L.DepthwiseConv2D(3, name="depthwise")(x))


def _conv_bn_hard_swish(x):
    x = L.BatchNormalization(name="bn")(L.Conv2D(6, 3, padding="same", name="conv")(x))
    return L.Multiply(name="hard_swish")([x, L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)])


def _residual(x):
    a = L.Conv2D(6, 3, padding="same", name="conv_a")(x)
    return L.Add(name="add")([a, L.Conv2D(6, 3, padding="same", name="conv_b")(a)])


def _squeeze_excite(x):
    x = L.ReLU()(L.Conv2D(6, 3, padding="same", name="conv")(x))
    scale = L.Conv2D(6, 1, activation="sigmoid", name="excite")(
        L.Conv2D(2, 1, activation="relu", name="squeeze")(L.GlobalAveragePooling2D(keepdims=True)(x)))
    return L.Multiply(name="se")([x, scale])


def _randomized(model, rng):
    """The VIB copy with BatchNormalization statistics and masks away from their defaults."""
    for layer in model.submodules:
        if isinstance(layer, L.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 2.0, w.shape).astype("float32") for w in layer.get_weights()])
    vib = tf_vib.add_vib_masks(model)
    randomize_masks(vib, rng)
    return vib, int(mask_kept(vib.get_layer("lstm_input_mask").mask, None)[0].sum())


def _filters(model, name):
    """The filters of layer ``name``, looked for in nested models and TimeDistributed too."""
    for layer in model.submodules:
        if layer.name == name and not isinstance(layer, L.TimeDistributed):
            return layer.filters
        if layer.name == name:
            return layer.layer.filters
    raise AssertionError(f"no layer {name!r}")


@pytest.mark.parametrize("build", [
    _conv_bn_relu_gap,
    lambda: _nested(_conv_depthwise_bn),
    lambda: _nested(_conv_bn_hard_swish),
], ids=["conv_bn_relu_gap", "nested_conv_depthwise_bn_gap", "nested_conv_bn_hard_swish_gap"])
def test_channels_leave_the_cnn_exactly(build, rng):
    model = build()
    vib, kept = _randomized(model, rng)
    assert 0 < kept < 6
    stripped = tf_vib.strip_masks(vib)
    x = rng.normal(size=(4, *FRAMES)).astype("float32")
    assert max_abs_diff(vib, stripped, x) <= EXACT
    assert _filters(stripped, "conv") == kept
    assert stripped.get_layer("lstm").cell.kernel.shape[0] == kept
    assert not any(layer.name.endswith("_select") for layer in stripped.submodules)
    assert stripped.count_params() < model.count_params()
    assert _filters(model, "conv") == 6  # the user's model is untouched


@pytest.mark.parametrize("block, stopper", [
    (_residual, "layer 'conv_b' (Conv2D) reads every one of them through its kernel (they meet at "
                "layer 'add' (Add), whose inputs must all drop the same channels)"),
    (_squeeze_excite, "layer 'squeeze' (Conv2D) reads every one of them through its kernel (they meet at "
                      "layer 'se' (Multiply), whose inputs must all drop the same channels)"),
], ids=["residual_add", "squeeze_excite_multiply"])
def test_channels_behind_a_merge_with_a_whole_branch_stay(block, stopper, rng):
    model = _nested(block)
    decision = next(d for d in mask_plan(model).decisions if d.name == "frames")
    assert decision.reason == f"channels kept: in model 'cnn', {stopper}"
    vib, kept = _randomized(model, rng)
    stripped = tf_vib.strip_masks(vib)
    x = rng.normal(size=(4, *FRAMES)).astype("float32")
    assert max_abs_diff(vib, stripped, x) <= EXACT
    assert _filters(stripped, "conv_b" if block is _residual else "conv") == 6
    assert stripped.get_layer("lstm").cell.kernel.shape[0] == kept  # the LSTM's rows go still


def test_flattened_frames_keep_their_channels():
    model = keras.Sequential([keras.Input((3, 4, 4, 2)), L.TimeDistributed(L.Conv2D(2, 3), name="conv"),
                              L.TimeDistributed(L.Flatten(), name="flatten"), L.LSTM(4), L.Dense(2)])
    decision = next(d for d in mask_plan(model).decisions if d.name == "flatten")
    assert decision.reason == ("channels kept: layer 'flatten' (TimeDistributed): "
                               "TimeDistributed(Flatten) mixes units")


@pytest.mark.slow
def test_mobilenet_v3_small_in_time_distributed_strips_and_converts(rng):
    backbone = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, include_top=False,
                                                   pooling="avg")
    clip = keras.Input((2, 32, 32, 3))
    model = keras.Model(clip, _lstm_head(L.TimeDistributed(backbone, name="frames")(clip)))
    vib = tf_vib.add_vib_masks(model)
    randomize_masks(vib, rng)
    assert [type(layer) for layer in vib.layers].count(FeatureMask) == 1
    stripped = tf_vib.strip_masks(vib)
    x = rng.uniform(-1.0, 1.0, size=(6, 2, 32, 32, 3)).astype("float32")
    assert max_abs_diff(vib, stripped, x) <= EXACT
    kept = int(mask_kept(vib.get_layer("lstm_input_mask").mask, None)[0].sum())
    assert _filters(stripped, "Conv_1") == kept < _filters(model, "Conv_1")
    assert stripped.count_params() < model.count_params()
    flat = converters.to_tflite(stripped, quantization="float32")
    assert converters.verify(stripped, flat, x).passed
