"""compress() on a tf.data.Dataset streamed from TFRecord shards: never read into arrays,
checked on its first batches before training, a bad batch later in the stream stopping the
run with the same clear error, its checkpoint kept."""

import numpy as np
import pytest

import tf_vib
from tf_vib._checks import BadArgument
from tf_vib._keras import keras, tf
from tf_vib.compress import _data, _prepare, _resume
from tf_vib.compress._stream import SAMPLE_BATCHES
from tf_vib.datasets import read_tfrecords, write_tfrecord

T, F, CLASSES, BATCH = 6, 3, 2, 16
N_TRAIN, N_VAL = 160, 48
FAST = {"thresholds": (0.0,), "unit_multiple": 1, "finetune_epochs": 1, "batch_size": BATCH}


def _arrays(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, T, F)).astype("float32")
    return x, (x[:, :, 0].mean(axis=1) > 0).astype("int64")


def _write_shards(folder, name, x, y, shards):
    """The rows in order over ``shards`` files: reading them in order gives the rows back."""
    return [write_tfrecord(folder / f"{name}-{index:02d}.tfrecord", [(x[rows], y[rows])])
            for index, rows in enumerate(np.array_split(np.arange(len(y)), shards))]


def _read_shards(paths):
    """Batches of (x, y) parsed from the shards: a dataset of unknown cardinality."""
    return read_tfrecords(paths, (T, F), BATCH)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A small trained LSTM and its data written to shards: train (4 shards, and a copy with
    one bad label after the checked batches) and validation, with the arrays to compare."""
    folder = tmp_path_factory.mktemp("shards")
    (x, y), (x_val, y_val) = _arrays(N_TRAIN, 0), _arrays(N_VAL, 1)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((T, F)), keras.layers.LSTM(8), keras.layers.Dense(CLASSES)])
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=3, batch_size=BATCH, verbose=0)
    bad = y.copy()
    bad[SAMPLE_BATCHES * BATCH + 20] = 5  # in a batch after the ones checked before training
    return {"model": model, "x_val": x_val, "y_val": y_val,
            "train": _write_shards(folder, "train", x, y, 4), "bad": _write_shards(folder, "bad", x, bad, 4),
            "val": _write_shards(folder, "val", x_val, y_val, 1)}


@pytest.fixture
def never_materialised(monkeypatch):
    """Fails the test if a dataset is read into arrays (`_data.as_arrays`)."""
    real = _data.as_arrays

    def spy(data, argument, model):
        if isinstance(data, tf.data.Dataset):
            raise AssertionError(f"`{argument}` was materialised into arrays")
        return real(data, argument, model)

    monkeypatch.setattr(_prepare, "as_arrays", spy)
    monkeypatch.setattr(_data, "as_arrays", spy)


def test_tfrecord_shards_are_compressed_end_to_end_without_materialising(shards, never_materialised):
    model = shards["model"]
    result = tf_vib.compress(model, _read_shards(shards["train"]), validation_data=_read_shards(shards["val"]),
                             epochs=2, verbose=0, **FAST)
    expected = np.mean(np.argmax(model.predict(shards["x_val"], verbose=0), -1) == shards["y_val"])
    assert result.report.baseline.val_accuracy == pytest.approx(expected)  # streamed evaluation, exact
    assert len(result.histories["vib"]["loss"]) == 2
    masks = [layer for layer in result.vib_model.submodules if hasattr(layer, "mask_settings")]
    assert masks and masks[0].mask_settings.kl_factor == pytest.approx(1 / N_TRAIN)  # samples counted
    final = result.report.stages[-1]
    assert final.val_accuracy == pytest.approx(
        np.mean(np.argmax(result.model.predict(shards["x_val"], verbose=0), -1) == shards["y_val"]))


def test_the_check_before_training_says_how_many_samples_it_read(shards, never_materialised, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(keras.Model, "fit", refuse)
    with pytest.raises(AssertionError, match="training started"):
        tf_vib.compress(shards["model"], _read_shards(shards["train"]), validation_data=_read_shards(shards["val"]),
                        epochs=2, verbose=1, **FAST)
    out = capsys.readouterr().out
    checked = SAMPLE_BATCHES * BATCH
    assert (f"checked the first {checked} samples of train_data ({SAMPLE_BATCHES} batches) before training; "
            f"the rest ({N_TRAIN} samples in all, {N_TRAIN // BATCH} batches) is checked batch by batch") in out
    assert f"checked the first {N_VAL} samples of validation_data (3 batches) before training" in out


def test_a_bad_label_late_in_the_stream_stops_the_run_clearly_keeping_its_checkpoint(shards, tmp_path,
                                                                                     monkeypatch, capsys):
    """The bad label is in a batch after the checked ones: it is met in training, stops the
    run with the error the same label gets before training, and the checkpoint stays. A bad
    batch met in the second epoch leaves the first epoch's backup, and the fixed data resume
    from it."""
    arguments = dict(validation_data=_read_shards(shards["val"]), epochs=2, verbose=0, **FAST)
    checkpoint = tmp_path / "late"
    with pytest.raises(BadArgument, match=r"`train_data` labels range over \[0, 5\], but the model has 2 outputs: "
                       r"labels must lie in \[0, 1\] \(met while streaming `train_data`, after the first "
                       rf"{SAMPLE_BATCHES * BATCH} samples were checked before training\)"):
        tf_vib.compress(shards["model"], _read_shards(shards["bad"]), checkpoint_dir=str(checkpoint), **arguments)
    assert (checkpoint / _resume.MANIFEST).exists()

    # the same bad batch, met only once the first epoch is backed up
    first_epoch_over = {"value": False}
    real_end = _resume._VIBBackup.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        real_end(self, epoch, logs)
        first_epoch_over["value"] = True

    monkeypatch.setattr(_resume._VIBBackup, "on_epoch_end", on_epoch_end)
    good, bad = _read_shards(shards["train"]), _read_shards(shards["bad"])

    def batches():
        yield from (bad if first_epoch_over["value"] else good)

    later = tf.data.Dataset.from_generator(batches, output_signature=good.element_spec)
    checkpoint = tmp_path / "second_epoch"
    with pytest.raises(BadArgument, match=r"`train_data` labels range over \[0, 5\].*met while streaming"):
        tf_vib.compress(shards["model"], later, checkpoint_dir=str(checkpoint), **arguments)
    assert tf.train.latest_checkpoint(str(checkpoint / "vib" / "backup" / "chief")) is not None
    monkeypatch.setattr(_resume._VIBBackup, "on_epoch_end", real_end)
    first_epoch_over["value"] = False
    capsys.readouterr()
    result = tf_vib.compress(shards["model"], later, checkpoint_dir=str(checkpoint), **{**arguments, "verbose": 2})
    assert "resuming VIB stage at epoch 2 of 2" in capsys.readouterr().out
    assert len(result.histories["vib"]["loss"]) == 1  # the second epoch only: the first was restored


def test_a_hold_out_from_shards_of_unknown_size_is_refused_naming_validation_data(shards, never_materialised):
    with pytest.raises(BadArgument, match=r"`train_data` is a tf.data.Dataset of unknown cardinality .*cannot hold "
                       r"out `validation_fraction` of it: pass `validation_data`.*assert_cardinality"):
        tf_vib.compress(shards["model"], _read_shards(shards["train"]), epochs=2, verbose=0, **FAST)
