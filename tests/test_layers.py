"""The VIB layers: golden equality with Keras cells, noise, KL, serialization, tfmot."""

import json

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
from helpers import cell_factory, set_mask, vib_masks

import tf_vib
from tf_vib._keras import keras, tf
from tf_vib.layers import VIBRNN, FeatureMask, GaussianMask, VIBGRUCell, VIBLSTMCell

CELLS = [
    ("lstm", VIBLSTMCell, keras.layers.LSTMCell, {}),
    ("gru", VIBGRUCell, keras.layers.GRUCell, {"reset_after": True}),
    ("gru_v1", VIBGRUCell, keras.layers.GRUCell, {"reset_after": False}),
]


RNNS = [keras.layers.RNN, VIBRNN]


def _pair(vib_cls, keras_cls, kwargs, return_sequences, rnn=keras.layers.RNN):
    inputs = keras.Input((5, 3))
    vib = keras.Model(inputs, rnn(vib_cls(4, **kwargs), return_sequences=return_sequences)(inputs))
    ref = keras.Model(inputs, keras.layers.RNN(keras_cls(4, **kwargs), return_sequences=return_sequences)(inputs))
    vib_cell, ref_cell = vib.layers[1].cell, ref.layers[1].cell
    for name in ("kernel", "recurrent_kernel", "bias"):
        value = np.random.default_rng(1).normal(0, 0.5, getattr(ref_cell, name).shape)
        getattr(ref_cell, name).assign(value)
        getattr(vib_cell, name).assign(value)
    return vib, ref


@pytest.mark.parametrize("rnn", RNNS, ids=["RNN", "VIBRNN"])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("kind,vib_cls,keras_cls,kwargs", CELLS, ids=[c[0] for c in CELLS])
def test_cell_with_unit_masks_equals_keras_cell(kind, vib_cls, keras_cls, kwargs, return_sequences, rnn):
    vib, ref = _pair(vib_cls, keras_cls, kwargs, return_sequences, rnn)
    for _, _, mask in vib_masks(vib):
        set_mask(mask, 1.0, -60.0)  # mu = 1, sigma ~ 1e-13: noise cannot show
    x = np.random.default_rng(2).normal(size=(6, 5, 3)).astype("float32")
    expected = ref(x).numpy()
    np.testing.assert_allclose(vib(x, training=False).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(vib(x, training=True).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("rnn", RNNS, ids=["RNN", "VIBRNN"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_noise_is_drawn_once_per_sequence(kind, rnn):
    # Constant inputs and zero kernels make every step's activation identical: any change
    # along time could only come from noise redrawn per step.
    cell = cell_factory(kind)(3, masked_gates="o" if kind == "lstm" else "h")
    layer = rnn(cell, return_sequences=True)
    x = np.ones((4, 6, 2), "float32")
    layer(x)
    cell.kernel.assign(np.zeros_like(cell.kernel))
    cell.recurrent_kernel.assign(np.zeros_like(cell.recurrent_kernel))
    bias = np.full(cell.bias.shape, 0.5, "float32")
    if kind == "lstm":
        bias[3:6] = 30.0  # forget gate open: c grows by i*g every step
    else:
        bias[..., :3] = -30.0  # update gate closed: h = hh every step
    cell.bias.assign(bias)
    for _, mask in cell.vib_masks.items():
        set_mask(mask, 1.0, np.log(0.25))  # sigma = 0.5: clearly visible noise
    out = layer(x, training=True).numpy()
    if kind == "lstm":
        # h_t = o * m_o * tanh(c_t): the ratio to the noiseless output is m_o, constant in t
        clean = layer(x, training=False).numpy()
        ratio = out / clean
        np.testing.assert_allclose(ratio, ratio[:, :1, :].repeat(6, axis=1), rtol=1e-5)
    else:
        np.testing.assert_allclose(out, out[:, :1, :].repeat(6, axis=1), rtol=1e-6)
    assert np.std(out[:, -1, :], axis=0).min() > 1e-3, "noise must differ between sequences"


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_training_steps_do_not_compute_the_inference_masks(kind, monkeypatch):
    # The deterministic value costs ops at every time step; a training call needs only noise.
    layer = keras.layers.RNN(cell_factory(kind)(3))
    x = np.ones((2, 4, 2), "float32")
    layer(x)

    def refuse(self, threshold=None):
        raise AssertionError("deterministic() called in a training step")

    monkeypatch.setattr(GaussianMask, "deterministic", refuse)
    assert layer(x, training=True).shape == (2, 3)
    with pytest.raises(AssertionError, match="deterministic"):
        layer(x, training=False)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_vibrnn_multiplies_the_inputs_by_the_kernel_once_per_sequence(kind, monkeypatch):
    layer = VIBRNN(cell_factory(kind)(4), return_sequences=True)
    x = np.random.default_rng(0).normal(size=(3, 7, 5)).astype("float32")
    layer(x)
    shapes = []
    real = type(layer.cell).project_inputs

    def spy(self, inputs):
        shapes.append(tuple(inputs.shape))
        return real(self, inputs)

    monkeypatch.setattr(type(layer.cell), "project_inputs", spy)
    reference = keras.layers.RNN(layer.cell, return_sequences=True)
    with tf.GradientTape(persistent=True) as tape:
        hoisted, looped = layer(x, training=False), reference(x, training=False)
    assert shapes[0] == (3, 7, 5), "VIBRNN projects the whole sequence at once"
    assert all(s == (3, 5) for s in shapes[1:]), "RNN projects step by step"
    assert not layer.cell._inputs_projected
    np.testing.assert_allclose(hoisted.numpy(), looped.numpy(), atol=1e-6)
    for a, b in zip(tape.gradient(hoisted, layer.cell.trainable_weights),
                    tape.gradient(looped, layer.cell.trainable_weights), strict=True):
        if a is not None:
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_feature_mask_noise_shared_across_time_and_deterministic_at_inference():
    layer = FeatureMask()
    x = np.ones((8, 5, 3), "float32")
    layer(x)
    set_mask(layer.mask, [1.0, 0.5, 2.0], [np.log(0.04), -20.0, 3.0])
    noisy = layer(x, training=True).numpy()
    np.testing.assert_allclose(noisy, noisy[:, :1, :].repeat(5, axis=1))
    assert noisy[:, 0, 0].std() > 0.05
    # third feature: log_alpha = 3 - log 4 > 0 -> pruned at inference
    np.testing.assert_allclose(layer(x, training=False).numpy()[0, 0], [1.0, 0.5, 0.0])


def test_kl_log_alpha_and_loss():
    layer = FeatureMask(kl_factor=1e-2, kl_mult=3.0)
    layer(np.ones((1, 4), "float32"))
    mu = np.array([1.0, 0.5, 2.0, 0.1], "float32")
    log_sigma2 = np.array([-9.0, -1.0, 0.0, 2.0], "float32")
    set_mask(layer.mask, mu, log_sigma2)
    expected_kl = 0.5 * np.sum(np.log1p(mu**2 / np.exp(log_sigma2)))
    assert layer.kl().numpy() == pytest.approx(expected_kl, rel=1e-5)
    np.testing.assert_allclose(layer.mask.log_alpha(), log_sigma2 - np.log(mu**2 + 1e-8), rtol=1e-5)
    # log_alpha = [-9, 0.39, -1.39, 6.6]
    np.testing.assert_array_equal(layer.mask.kept(), [True, False, True, False])
    np.testing.assert_array_equal(layer.mask.kept(threshold=-2.0), [True, False, False, False])
    assert float(tf.add_n(layer.losses)) == pytest.approx(1e-2 * 3.0 * expected_kl, rel=1e-5)


def test_model_loss_includes_every_layer_kl():
    model = keras.Sequential([
        keras.Input((5, 3)),
        FeatureMask(kl_factor=1.0),
        keras.layers.RNN(VIBLSTMCell(4, kl_factor=2.0)),
        keras.layers.Dense(2),
    ])
    total = sum(float(layer.kl()) * w for layer, w in [(model.layers[0], 1.0), (model.layers[1].cell, 2.0)])
    assert float(tf.add_n(model.losses)) == pytest.approx(total, rel=1e-5)


def test_reference_initialisation():
    cell = VIBLSTMCell(200)
    keras.layers.RNN(cell)(np.zeros((1, 2, 3), "float32"))
    mu, log_sigma2 = cell.vib_masks["o"].mu.numpy(), cell.vib_masks["o"].log_sigma2.numpy()
    assert abs(mu.mean() - 1.0) < 0.005 and 0.005 < mu.std() < 0.015
    assert abs(log_sigma2.mean() + 9.0) < 0.005
    assert not np.allclose(cell.vib_masks["o"].mu.numpy(), cell.vib_masks["i"].mu.numpy())


@pytest.mark.parametrize("layer", [
    FeatureMask(kl_factor=3e-5, kl_mult=2.0, keep_threshold=0.5),
    VIBLSTMCell(5, masked_gates="io", kl_mult=4.0, unit_forget_bias=False, activation="relu"),
    VIBGRUCell(5, reset_after=False, masked_gates="h", recurrent_activation="hard_sigmoid"),
    tf_vib.layers.SelectFeatures([0, 2]),
], ids=lambda layer: type(layer).__name__)
def test_config_round_trips_through_json(layer):
    config = json.loads(json.dumps(layer.get_config()))
    clone = type(layer).from_config(config)
    assert clone.get_config() == layer.get_config()


def test_model_with_every_layer_saves_and_loads(tmp_path):
    inputs = keras.Input((6, 5))
    x = tf_vib.layers.SelectFeatures([0, 1, 3, 4])(inputs)
    x = FeatureMask()(x)
    x = VIBRNN(VIBLSTMCell(6), return_sequences=True)(x)
    x = keras.layers.RNN(VIBGRUCell(5))(x)
    x = keras.layers.Dense(4, activation="relu")(x)
    x = FeatureMask()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    path = tmp_path / "vib.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).normal(size=(4, 6, 5)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]


@pytest.mark.parametrize("rnn", RNNS, ids=["RNN", "VIBRNN"])
def test_tfmot_prunes_rnn_of_vib_lstm_cell(rnn):
    x = np.random.default_rng(0).normal(size=(32, 5, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 2, 32)
    model = keras.Sequential([
        keras.Input((5, 3)), rnn(VIBLSTMCell(8)), keras.layers.Dense(2),
    ])
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.75, begin_step=0, frequency=1)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, epochs=1, batch_size=16, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    assert type(stripped.layers[0]) is rnn
    cell = stripped.layers[0].cell
    assert isinstance(cell, VIBLSTMCell)
    for weight in (cell.kernel, cell.recurrent_kernel):
        assert np.mean(weight.numpy() == 0) == pytest.approx(0.75, abs=0.02)
    assert np.mean(cell.vib_masks["o"].mu.numpy() == 0) == 0  # masks are not pruned


@pytest.mark.parametrize("make,match", [
    (lambda: VIBLSTMCell(0), "`units` of VIBLSTMCell must be a positive integer; received units=0"),
    (lambda: VIBGRUCell(2.5), "received units=2.5"),
    (lambda: VIBLSTMCell(4, masked_gates="ox"), "masked_gates.*'ifco'.*'ox'"),
    (lambda: VIBGRUCell(4, masked_gates=""), "masked_gates"),
    (lambda: FeatureMask(kl_factor=-1.0), r"`kl_factor` must be >= 0.0; received -1.0"),
    (lambda: FeatureMask(kl_mult="big"), "`kl_mult` must be a number; received 'big'"),
    (lambda: tf_vib.layers.SelectFeatures([2, 1]), "sorted list"),
])
def test_bad_arguments_name_the_argument_and_value(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_feature_mask_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"FeatureMask .* received input_shape=\(2, 3, 4, 5\)"):
        FeatureMask()(np.zeros((2, 3, 4, 5), "float32"))
