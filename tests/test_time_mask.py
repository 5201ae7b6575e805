"""TimeMask (frame pruning, issue 17): strip exactness, serialization, the keep rule, compress
end to end, and refusals before training."""

import numpy as np
import pytest
from helpers import randomize_masks, set_mask

import tf_vib
from tf_vib._keras import keras, tf
from tf_vib.datasets import select_frames
from tf_vib.layers import VIBRNN, SelectFrames, TimeMask, VIBLSTMCell
from tf_vib.surgery import kept_frames, strip_masks

T, PRUNED = 6, [0, 3]
RECURRENT = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "simple_rnn": keras.layers.SimpleRNN}


def _clip_model(kind="lstm", front="dense"):
    if front == "conv":
        inputs = keras.Input((T, 6, 6, 2))
        h = keras.layers.TimeDistributed(keras.layers.Conv2D(3, 3, activation="relu"))(inputs)
        h = keras.layers.TimeDistributed(keras.layers.GlobalAveragePooling2D())(h)
    else:
        inputs = keras.Input((T, 4))
        h = keras.layers.TimeDistributed(keras.layers.Dense(5, activation="tanh"))(inputs)
    h = RECURRENT[kind](4)(h)
    return keras.Model(inputs, keras.layers.Dense(3)(h))


def _clips(model, rng, n=5):
    return rng.normal(size=(n, *model.input_shape[1:])).astype("float32")


def _time_mask(model):
    return next(layer.cell.time_mask for layer in model.layers if isinstance(layer, VIBRNN))


def _masked(kind, front, rng):
    """The VIB model with every mask away from 1, some units and the PRUNED frames pruned."""
    vib = tf_vib.add_vib_masks(_clip_model(kind, front), frame_masks=True)
    randomize_masks(vib, rng)
    log_sigma2 = np.full(T, -6.0)
    log_sigma2[PRUNED] = 6.0
    set_mask(_time_mask(vib), rng.uniform(0.3, 2.0, T), log_sigma2)
    return vib


@pytest.mark.parametrize("kind,front", [("lstm", "dense"), ("gru", "dense"), ("simple_rnn", "dense"),
                                        ("lstm", "conv")])
def test_strip_takes_the_kept_frames_exactly(kind, front, rng):
    vib = _masked(kind, front, rng)
    x = _clips(vib, rng)
    kept = [t for t in range(T) if t not in PRUNED]
    assert kept_frames(vib) == {"kept": kept, "of": T}
    stripped, records = strip_masks(vib, return_records=True)
    assert stripped.input_shape[1] == len(kept) < T
    assert not any(isinstance(layer, (VIBRNN, SelectFrames)) for layer in stripped.layers)
    expected = vib(x).numpy()
    np.testing.assert_allclose(stripped(x[:, kept]).numpy(), expected, atol=1e-5)
    frames = [r for r in records if r.kind == "TimeMask"]
    assert [(r.units_kept, r.units_total) for r in frames] == [(len(kept), T)]
    inside = strip_masks(vib, input_frames="all")
    assert inside.input_shape[1] == T
    np.testing.assert_allclose(inside(x).numpy(), expected, atol=1e-5)
    # the masked model really skips the pruned frames: they change nothing
    changed = x.copy()
    changed[:, PRUNED] = 100.0
    np.testing.assert_allclose(vib(changed).numpy(), expected, atol=1e-6)
    assert "frames kept (" in str(tf_vib.summary(vib))


def test_gate_acts_on_the_state_update_while_training(rng):
    vib = _masked("lstm", "dense", rng)
    x = _clips(vib, rng)
    changed = x.copy()
    changed[:, PRUNED] = 100.0
    # noisy gates (mu + sigma * eps, not 0) let the pruned frames in while training
    assert np.abs(vib(changed, training=True).numpy() - vib(x, training=True).numpy()).max() > 1e-3


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_serialization_round_trip(suffix, tmp_path, rng):
    vib = _masked("gru", "dense", rng)
    x = _clips(vib, rng)
    path = str(tmp_path / f"vib{suffix}")
    vib.save(path)
    with tf_vib.vib_scope():  # .h5 files look layers up by their short names
        loaded = keras.models.load_model(path)
    mask = _time_mask(loaded)
    assert isinstance(mask, TimeMask) and mask.units == T
    np.testing.assert_array_equal(mask.log_sigma2.numpy(), _time_mask(vib).log_sigma2.numpy())
    np.testing.assert_allclose(loaded(x).numpy(), vib(x).numpy(), atol=1e-6)
    assert kept_frames(loaded) == kept_frames(vib)


def test_cell_config_round_trip():
    cell = VIBLSTMCell(3, frame_steps=7)
    assert VIBLSTMCell.from_config(cell.get_config()).frame_steps == 7
    layer = VIBRNN.from_config(VIBRNN(cell).get_config())
    layer(np.zeros((2, 7, 2), "float32"))
    assert layer.cell.time_mask.units == 7
    with pytest.raises(ValueError, match=r"TimeMask of 7 frames.*input_shape=\(2, 5, 2\)"):
        VIBRNN(VIBLSTMCell(3, frame_steps=7))(np.zeros((2, 5, 2), "float32"))
    with pytest.raises(ValueError, match="frame_steps=0"):
        VIBLSTMCell(3, frame_steps=0)


def test_keep_rule_is_the_other_masks_rule(rng):
    vib = _masked("lstm", "dense", rng)
    mask = _time_mask(vib)
    mu = np.array([1.0, 0.5, -2.0, 1e-3, 1.0, 0.9])
    log_sigma2 = np.array([-0.1, -1.5, 1.3, -20.0, 2.5, 0.1])
    set_mask(mask, mu, log_sigma2)
    log_alpha = log_sigma2 - np.log(mu ** 2 + 1e-8)
    for threshold in (None, 0.5, 3.0):
        expected = np.flatnonzero(log_alpha < (0.0 if threshold is None else threshold)).tolist()
        assert kept_frames(vib, threshold=threshold)["kept"] == expected
        assert np.flatnonzero(mask.kept(threshold)).tolist() == expected
    # the KL is GaussianMask's: 0.5 * sum log(1 + mu^2 / sigma^2)
    np.testing.assert_allclose(float(mask.kl()), 0.5 * np.sum(np.log1p(mu ** 2 * np.exp(-log_sigma2))), rtol=1e-5)
    set_mask(mask, 1.0, 9.0)
    with pytest.raises(ValueError, match="would remove all 6 frames"):
        kept_frames(vib)
    assert kept_frames(vib, min_units=2)["kept"] == [0, 1]


def test_select_frames_arrays_and_datasets():
    clips = np.arange(2 * T * 3, dtype="float32").reshape(2, T, 3)
    frames = {"kept": [1, 4], "of": T}
    np.testing.assert_array_equal(select_frames(clips, frames), clips[:, [1, 4]])
    batched = tf.data.Dataset.from_tensor_slices((clips, np.array([0, 1]))).batch(2)
    x, y = next(iter(select_frames(batched, frames)))
    np.testing.assert_array_equal(x.numpy(), clips[:, [1, 4]])
    np.testing.assert_array_equal(y.numpy(), [0, 1])
    single = next(iter(select_frames(tf.data.Dataset.from_tensor_slices(clips), [1, 4])))
    np.testing.assert_array_equal(single.numpy(), clips[0, [1, 4]])
    with pytest.raises(ValueError, match=r"`clips` have 6 frames, but `kept` selects positions \[1, 4\] of 8"):
        select_frames(clips, {"kept": [1, 4], "of": 8})
    with pytest.raises(ValueError, match="sorted list of distinct"):
        select_frames(clips, [4, 1])


def _refused(model, match):
    with pytest.raises(ValueError, match=match):
        tf_vib.add_vib_masks(model, frame_masks=True)


def test_models_whose_frames_cannot_be_skipped_are_refused():
    def seq(*layers, shape=(T, 4)):
        return keras.Sequential([keras.Input(shape), *layers, keras.layers.Dense(2)])

    lstm = keras.layers.LSTM
    _refused(seq(keras.layers.Flatten(), keras.layers.Dense(4), shape=(T, 4)), "it has no recurrent layer")
    _refused(seq(lstm(3), shape=(None, 4)), "no fixed length")
    _refused(seq(lstm(3, return_sequences=True), keras.layers.GlobalAveragePooling1D()), "return_sequences=True")
    _refused(seq(lstm(3, go_backwards=True)), "go_backwards=True")
    _refused(seq(keras.layers.Bidirectional(lstm(3))), "is Bidirectional")
    _refused(seq(keras.layers.Masking(), lstm(3)), "masking")
    _refused(seq(keras.layers.Conv1D(4, 3, padding="same"), lstm(3)), r"\(Conv1D\) between the input and layer 'lstm.*' is not a per-frame layer")
    with pytest.raises(ValueError, match="`frame_masks` must be True or False; received 'yes'"):
        tf_vib.add_vib_masks(seq(lstm(3)), frame_masks="yes")


def test_compress_refuses_before_training():
    model = _clip_model()
    model.compile(loss="sparse_categorical_crossentropy")
    x, y = np.zeros((20, T, 4), "float32"), np.arange(20) % 3
    with pytest.raises(ValueError, match="needs the VIB stage"):
        tf_vib.compress(model, (x, y), vib=False, low_rank=2, frame_masks=True, verbose=0)
    flat = keras.Sequential([keras.Input((None, 4)), keras.layers.LSTM(3), keras.layers.Dense(3)])
    flat.compile(loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="no fixed length.*received frame_masks=True"):
        tf_vib.compress(flat, (x, y), frame_masks=True, verbose=0)


@pytest.fixture(scope="module")
def compressed():
    """compress(frame_masks=True) for a few epochs on clips whose label is in frames 0 and 1."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, T, 4)).astype("float32")
    y = (x[:, 0, 0] + x[:, 1, 1] > 0).astype("int64")
    keras.utils.set_random_seed(0)
    model = _clip_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x[:160], y[:160], epochs=10, batch_size=32, verbose=0)
    result = tf_vib.compress(model, (x[:160], y[:160]), validation_data=(x[160:200], y[160:200]),
                             test_data=(x[200:], y[200:]), epochs=5, finetune_epochs=1, kl_factor=0.05,
                             mask_learning_rate=0.3, warmup_epochs=0, frame_masks=True, on_miss="best",
                             thresholds=[0.0], unit_multiple=1, distill=False, verbose=0)
    return result, x[200:], y[200:]


@pytest.mark.slow
def test_compress_with_frame_masks_end_to_end(compressed):
    result, x_test, y_test = compressed
    frames = result.report.frames
    assert frames["of"] == T and 1 <= len(frames["kept"]) < T
    assert result.model.input_shape[1:] == (len(frames["kept"]), 4)
    assert result.report.to_dict()["frames"] == frames
    assert f"frames kept: {len(frames['kept'])}/{T}" in str(result.report)
    # the K-frame model is the one the report scored on the full clips
    predicted = np.argmax(result.model.predict(select_frames(x_test, frames), verbose=0), axis=-1)
    assert np.mean(predicted == y_test) == pytest.approx(result.report.final.test_score, abs=1e-9)
