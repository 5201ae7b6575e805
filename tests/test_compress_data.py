"""compress()'s data: several inputs and outputs, per-step labels, labels matched to the loss,
token ids, and bad data refused before any training (issue 13)."""

import numpy as np
import pytest

import tf_vib
from tf_vib._keras import keras, tf
from tf_vib.compress._data import as_arrays, num_samples, stratified_holdout, take
from tf_vib.compress._prepare import check_accuracy_drop, prepare_data
from tf_vib.compress._report import StageResult
from tf_vib.compress._scorer import ACCURACY
from tf_vib.compress._stream import SAMPLE_BATCHES, Stream
from tf_vib.compress._training import accuracy, resolve_loss

SPARSE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
N, T = 60, 6
FAST = {"thresholds": (0.0,), "unit_multiple": 1}  # one candidate, no trim: end-to-end runs stay short


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started before the data were checked")

    monkeypatch.setattr(keras.Model, "fit", refuse)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _two_inputs(vocabulary=10):
    """Features (T, 3) and int32 token ids (T,) read by an Embedding, one class output."""
    features = keras.Input((T, 3), name="features")
    tokens = keras.Input((T,), dtype="int32", name="tokens")
    h = keras.layers.Concatenate()([features, keras.layers.Embedding(vocabulary, 2)(tokens)])
    model = keras.Model([features, tokens], keras.layers.Dense(3)(keras.layers.LSTM(4)(h)))
    model.compile(keras.optimizers.Adam(1e-2), SPARSE)
    return model


def _two_input_data(n=N, seed=0):
    rng = _rng(seed)
    tokens = rng.integers(0, 10, (n, T)).astype("int32")
    features = rng.normal(size=(n, T, 3)).astype("float32")
    features[:, 0, 0] = np.arange(n)  # row identity, to check that inputs stay aligned
    return features, tokens, tokens[:, 0] % 3


def _prepare(model, train, **kwargs):
    args = dict(validation_data=None, test_data=None, validation_fraction=0.25, seed=0,
                loss=resolve_loss(model, kwargs.pop("loss", None)))
    args.update(kwargs)
    return prepare_data(model, train, args["validation_data"], args["test_data"],
                        args["validation_fraction"], args["seed"], args["loss"])


def _tagger(classes=3, loss=SPARSE):
    model = keras.Sequential([keras.Input((T, 3)), keras.layers.LSTM(4, return_sequences=True),
                              keras.layers.TimeDistributed(keras.layers.Dense(classes))])
    model.compile(keras.optimizers.Adam(1e-2), loss)
    return model


def _classifier(loss=SPARSE, units=3, activation=None):
    model = keras.Sequential([keras.Input((T, 3)), keras.layers.LSTM(4),
                              keras.layers.Dense(units, activation=activation)])
    model.compile(keras.optimizers.Adam(1e-2), loss)
    return model


def _x(n=N, seed=0):
    return _rng(seed).normal(size=(n, T, 3)).astype("float32")


# -- 1. several inputs (and outputs) --------------------------------------------------------------

def _streamed(part):
    """A `Stream`'s batches joined into arrays (the test reads them; compress() never does)."""
    batches = [[tf.nest.flatten(x), tf.nest.flatten(y)] for x, y in part.dataset.as_numpy_iterator()]
    return tuple(tuple(np.concatenate([b[k][i] for b in batches]) for i in range(len(batches[0][k])))
                 for k in (0, 1))


def test_two_inputs_as_list_tuple_dict_and_datasets_give_the_same_arrays():
    model = _two_inputs()
    features, tokens, y = _two_input_data()
    forms = [([features, tokens], y), ((features, tokens), y), ({"tokens": tokens, "features": features}, y)]
    for form in forms:
        data = _prepare(model, form)
        x_train, x_val = data.train[0], data.val[0]
        assert isinstance(x_train, tuple) and len(x_train) == 2
        assert num_samples(x_train) == 45 and num_samples(x_val) == 15
        for x_part in (x_train, x_val):  # the same rows of both inputs
            rows = x_part[0][:, 0, 0].astype(int)
            np.testing.assert_array_equal(x_part[1], tokens[rows])
            assert x_part[1].dtype == np.int32
        np.testing.assert_array_equal(data.labels_val, y[x_val[0][:, 0, 0].astype(int)])
    # a dataset is streamed in model order, its hold-out its first elements (batches of a batched one)
    datasets = [(tf.data.Dataset.from_tensor_slices(({"features": features, "tokens": tokens}, y)).batch(7), 14),
                (tf.data.Dataset.from_tensor_slices(((features, tokens), y)), 15)]
    for dataset, held in datasets:
        data = _prepare(model, dataset)
        assert isinstance(data.train, Stream) and isinstance(data.val, Stream)
        assert (data.train.num_samples, data.val.num_samples) == (N - held, held)
        for part, rows in ((data.train, np.arange(held, N)), (data.val, np.arange(held))):
            (x_features, x_tokens), (labels,) = _streamed(part)
            np.testing.assert_array_equal(x_features[:, 0, 0].astype(int), rows)
            np.testing.assert_array_equal(x_tokens, tokens[rows])
            assert x_tokens.dtype == np.int32
            np.testing.assert_array_equal(labels, y[rows])


def test_holdout_is_stratified_and_take_indexes_every_input():
    labels = np.repeat([0, 1, 2], [20, 10, 30])
    keep, held = stratified_holdout(labels, 0.2, seed=0)
    assert np.bincount(labels[held]).tolist() == [4, 2, 6]
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(60))
    x = {"a": np.arange(60), "b": np.arange(60) * 10}
    assert take(x, held)["b"].tolist() == (held * 10).tolist()
    steps = np.repeat(labels[:, None], 4, axis=1)
    steps[:, 0] = 1  # a minority step: each sequence's most frequent class still stratifies
    assert np.bincount(labels[stratified_holdout(steps, 0.2, seed=0)[1]]).tolist() == [4, 2, 6]


def test_a_dataset_of_batches_of_different_lengths_is_streamed_as_it_is_padded():
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.LSTM(4), keras.layers.Dense(3)])
    ragged = tf.data.Dataset.from_generator(
        lambda: ((np.zeros((n, 3), "float32"), 1) for n in (3, 5, 4)),
        output_signature=(tf.TensorSpec((None, 3)), tf.TensorSpec((), tf.int64))).padded_batch(2)
    stream = _prepare(model, ragged, validation_data=ragged, loss=SPARSE).train
    assert (stream.num_samples, stream.steps, stream.checked) == (3, 2, 3)
    assert stream.dataset.element_spec[0].shape.as_list() == [None, None, 3]
    assert [x.shape for x, _ in stream.dataset.as_numpy_iterator()] == [(2, 5, 3), (1, 4, 3)]
    with pytest.raises(ValueError, match=r"`train_data` yields elements \(or batches\) of different shapes"):
        as_arrays(ragged, "train_data", model)  # arrays can only be joined at one length


def test_a_padded_length_first_seen_after_the_checked_batches_streams_too():
    """The first SAMPLE_BATCHES batches all pad to 4 steps, a later one to 6: the length the
    dataset's spec leaves open is not fixed from the checked sample."""
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.LSTM(4), keras.layers.Dense(3)])
    lengths = [4] * (2 * SAMPLE_BATCHES) + [6, 6]
    padded = tf.data.Dataset.from_generator(
        lambda: ((np.zeros((n, 3), "float32"), 1) for n in lengths),
        output_signature=(tf.TensorSpec((None, 3)), tf.TensorSpec((), tf.int64))).padded_batch(2)
    stream = _prepare(model, padded, validation_data=padded, loss=SPARSE).train
    assert [x.shape[1] for x, _ in stream.dataset.as_numpy_iterator()] == [4] * SAMPLE_BATCHES + [6]


def test_an_infinite_dataset_is_refused_before_reading_it(no_training):
    endless = tf.data.Dataset.from_tensor_slices((_x(), np.arange(N) % 3)).batch(8).repeat()
    with pytest.raises(ValueError, match=r"`train_data` is an infinite tf.data.Dataset .*dataset.take\(n\)"):
        tf_vib.compress(_classifier(), endless, validation_data=(_x(), np.arange(N) % 3), verbose=0)


@pytest.mark.parametrize("make,match", [
    (lambda f, t, y: ([f[:, :, :2], t], y),
     r"`train_data` input 'features' has shape \(60, 6, 2\), but the model expects \(batch, 6, 3\)"),
    (lambda f, t, y: ([f], y), r"`train_data` gives 1 input array, but the model has 2 inputs \(features, tokens\)"),
    (lambda f, t, y: (f, y), r"`train_data` gives one input array, but the model has 2 inputs"),
    (lambda f, t, y: ({"features": f, "ids": t}, y),
     r"`train_data` gives inputs keyed \['features', 'ids'\], but the model has 2 inputs \(features, tokens\)"),
    (lambda f, t, y: ([f, t[:50]], y), r"`train_data` has inputs of \[60, 50\] samples \(features, tokens\)"),
    (lambda f, t, y: (f, t, y), r"`train_data` holds \(x, y, sample_weight\).*nested: \(\(x1, x2\), y\)"),
])
def test_bad_two_input_data_is_refused_before_training(no_training, make, match):
    with pytest.raises(ValueError, match=match):
        tf_vib.compress(_two_inputs(), make(*_two_input_data()), verbose=0)


def test_two_outputs_take_labels_per_output_checked_per_output():
    inputs = keras.Input((T, 3))
    h = keras.layers.LSTM(4)(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(3, name="kind")(h), keras.layers.Dense(2, name="flag")(h)])
    model.compile(keras.optimizers.Adam(1e-2), SPARSE)
    y = np.arange(N) % 3
    data = _prepare(model, (_x(), {"flag": y % 2, "kind": y}))
    kind, flag = data.labels_val
    np.testing.assert_array_equal(flag, kind % 2)  # the same held-out rows in both outputs
    with pytest.raises(ValueError, match=r"`train_data` labels of output 'flag' range over \[0, 2\], but the model has 2 outputs"):
        _prepare(model, (_x(), [y, y]))


@pytest.mark.slow
def test_compress_a_two_output_model():
    inputs = keras.Input((T, 3))
    h = keras.layers.LSTM(4)(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(3, name="kind")(h), keras.layers.Dense(2, name="flag")(h)])
    model.compile(keras.optimizers.Adam(1e-2), SPARSE)
    y = np.arange(48) % 3
    result = tf_vib.compress(model, (_x(48), {"kind": y, "flag": y % 2}), epochs=1, finetune_epochs=1,
                             batch_size=16, verbose=0, **FAST)
    assert [o.shape[-1] for o in result.model.outputs] == [3, 2]


# -- 2. per-step outputs -------------------------------------------------------------------------

def test_per_step_labels_sparse_or_one_hot():
    model = _tagger()
    steps = _rng().integers(0, 3, (N, T))
    sparse, one_hot = _prepare(model, (_x(), steps)), _prepare(model, (_x(), np.eye(3)[steps]))
    assert sparse.labels_val.shape == (15, T) and sparse.labels_val.dtype == np.int64
    np.testing.assert_array_equal(sparse.labels_val, one_hot.labels_val)
    assert one_hot.notes == ["one-hot labels converted to class indices for the loss "
                             "SparseCategoricalCrossentropy (train_data)"]
    with pytest.raises(ValueError, match=r"`train_data` labels have shape \(60,\); expected \(n, 6\) class "
                       r"indices or \(n, 6, 3\) one-hot rows, as the model's output has shape "
                       r"\(None, 6, 3\): it predicts one class per step"):
        _prepare(model, (_x(), steps[:, 0]))


def test_accuracy_is_averaged_over_every_step():
    identity = keras.Sequential([keras.Input((2, 3)), keras.layers.Activation("linear")])
    scores = np.array([[[0, 1, 0], [1, 0, 0]], [[0, 0, 1], [0, 0, 1]]], "float32")  # argmax 1 0 / 2 2
    assert accuracy(identity, scores, np.array([[1, 0], [2, 1]])) == pytest.approx(0.75)
    assert accuracy(identity, scores, np.array([[1, 1], [0, 1]])) == pytest.approx(0.25)


# -- 3. labels matched to the loss, and binary outputs --------------------------------------------

@pytest.mark.parametrize("loss", [SPARSE, "sparse_categorical_crossentropy"])
def test_one_hot_labels_become_indices_for_a_sparse_loss(loss):
    y = np.arange(N) % 3
    data = _prepare(_classifier(loss), (_x(), np.eye(3)[y]))
    assert data.train[1].shape == (45,) and data.train[1].dtype == np.int64
    np.testing.assert_array_equal(data.train[1], y[np.setdiff1d(np.arange(N), _held())])
    assert "one-hot labels converted to class indices" in data.notes[0]


def _held():
    return stratified_holdout(np.arange(N) % 3, 0.25, 0)[1]


@pytest.mark.parametrize("loss", [keras.losses.CategoricalCrossentropy(from_logits=True), "categorical_crossentropy"])
def test_indices_become_one_hot_rows_for_a_categorical_loss(loss):
    y = np.arange(N) % 3
    data = _prepare(_classifier(loss), (_x(), y), validation_data=(_x(12, 1), y[:12]))
    np.testing.assert_array_equal(data.train[1], np.eye(3)[y])
    np.testing.assert_array_equal(data.val[1], np.eye(3)[y[:12]])
    assert data.notes == [f"class indices converted to one-hot rows for the loss "
                          f"{'CategoricalCrossentropy' if loss != 'categorical_crossentropy' else 'categorical_crossentropy'} "
                          "(train_data, validation_data)"]


def test_labels_that_do_not_fit_the_loss_are_refused(no_training):
    soft = np.full((N, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"`train_data` labels are rows of 3 values that are not one-hot.*"
                       r"the loss SparseCategoricalCrossentropy takes class indices"):
        tf_vib.compress(_classifier(), (_x(), soft), verbose=0)
    with pytest.raises(ValueError, match=r"the loss SparseCategoricalCrossentropy needs an output of 2 or more "
                       r"classes, but the model's output has 1 unit .*use BinaryCrossentropy"):
        tf_vib.compress(_classifier(units=1), (_x(), np.arange(N) % 2), verbose=0)


def test_binary_labels_for_a_sigmoid_unit():
    model = _classifier("binary_crossentropy", units=1, activation="sigmoid")
    y = np.arange(N) % 2
    data = _prepare(model, (_x(), y))
    assert data.train[1].shape == (44, 1) and data.train[1].dtype == np.float32
    assert data.labels_val.shape == (16,) and set(data.labels_val.tolist()) == {0, 1}
    with pytest.raises(ValueError, match=r"labels range over \[0, 2\], but the model has 1 outputs: labels must lie in \[0, 1\]"):
        _prepare(model, (_x(), np.arange(N) % 3))


@pytest.mark.parametrize("activation,threshold", [("sigmoid", 0.5), ("linear", 0.0)])
def test_binary_accuracy_thresholds_a_probability_or_a_logit(activation, threshold):
    unit = keras.Sequential([keras.Input((1,)), keras.layers.Activation(activation)])
    x = np.array([[-2.0], [-0.2], [0.2], [2.0]], "float32")  # sigmoid: 0.12 0.45 0.55 0.88
    assert accuracy(unit, x, np.array([0, 0, 1, 1])) == 1.0
    assert accuracy(unit, x, np.array([0, 1, 1, 1])) == 0.75


def test_report_measures_binary_accuracy():
    unit = keras.Sequential([keras.Input((1,)), keras.layers.Activation("sigmoid")])
    x = np.array([[-2.0], [2.0], [3.0]], "float32")
    assert StageResult.measure("baseline", unit, ACCURACY, (x, np.array([0, 1, 1])), None, 0.0).val_accuracy == 1.0
    assert StageResult.measure("baseline", unit, ACCURACY, (x, np.array([1, 1, 1])), None, 0.0).val_accuracy == 2 / 3


@pytest.mark.slow
def test_compress_a_binary_model_end_to_end(capsys):
    model = _classifier("binary_crossentropy", units=1, activation="sigmoid")
    x = _x(48)
    y = (x[:, :, 0].mean(axis=1) > 0).astype(int)
    result = tf_vib.compress(model, (x, y), epochs=1, finetune_epochs=1, batch_size=16, verbose=1, **FAST)
    assert result.model.output_shape == (None, 1)
    assert "distillation is off: it matches a softmax over 2 or more classes" in capsys.readouterr().out


# -- 4-7. NaN labels, max_accuracy_drop, ragged sequences, sample weights ------------------------

def test_nan_labels_are_named_as_nan(no_training):
    y = (np.arange(N) % 3).astype("float32")
    y[[7, 9]] = np.nan
    with pytest.raises(ValueError, match=r"`train_data` labels contain 2 NaN values \(first at index \(7,\)\)"):
        tf_vib.compress(_classifier(), (_x(), y), verbose=0)


@pytest.mark.parametrize("drop", [1, 1.0, 5])
def test_max_accuracy_drop_of_one_or_more_is_refused_as_a_fraction(no_training, drop):
    with pytest.raises(ValueError, match=rf"`max_accuracy_drop` is a fraction of accuracy \(0.01 = one point\), "
                       rf"so it must be < 1; received {drop!r}, which would accept a drop of {100 * drop:g} points"):
        tf_vib.compress(_classifier(), (_x(), np.arange(N) % 3), max_accuracy_drop=drop, verbose=0)
    assert check_accuracy_drop(0.0) == 0.0 and check_accuracy_drop(0.99) == 0.99


def test_ragged_sequences_are_refused_naming_pad_sequences(no_training):
    rng = _rng()
    ragged = [rng.normal(size=(int(n), 3)) for n in rng.integers(3, 7, N)]
    as_objects = np.empty(N, object)
    as_objects[:] = ragged
    for x in (ragged, as_objects):
        with pytest.raises(ValueError, match=r"`train_data` inputs are 60 sequences of different shapes \(3 to 6 "
                           r"steps\).*tf_vib.datasets.pad_sequences\(sequences\)"):
            tf_vib.compress(_classifier(), (x, np.arange(N) % 3), verbose=0)
    padded = tf_vib.datasets.pad_sequences(ragged, length=T)
    assert num_samples(_prepare(_classifier(), (padded, np.arange(N) % 3)).train[0]) == 45


def test_sample_weights_are_refused_plainly(no_training):
    x, y, w = _x(), np.arange(N) % 3, np.ones(N)
    for data in ((x, y, w), tf.data.Dataset.from_tensor_slices((x, y, w)).batch(8)):
        with pytest.raises(ValueError, match=r"`train_data` holds \(x, y, sample_weight\) or three parts: "
                           r"compress\(\) takes \(x, y\) without sample weights"):
            tf_vib.compress(_classifier(), data, verbose=0)
    with pytest.raises(ValueError, match=r"`validation_data` holds \(x, y, sample_weight\)"):
        tf_vib.compress(_classifier(), (x, y), validation_data=(x, y, w), verbose=0)


# -- 8-9. token ids: dtype kept, checked against the model and its Embedding ---------------------

def test_integer_inputs_keep_their_dtype_and_integral_floats_are_cast():
    features, tokens, y = _two_input_data()
    kept = _prepare(_two_inputs(), ([features, tokens.astype("int64")], y))
    assert kept.train[0][1].dtype == np.int64 and kept.train[0][0].dtype == np.float32
    cast = _prepare(_two_inputs(), ([features, tokens.astype("float64")], y))
    assert cast.train[0][1].dtype == np.int32 and cast.val[0][1].dtype == np.int32


@pytest.mark.parametrize("tokens,match", [
    (lambda t: t + 0.5, r"`train_data` input 'tokens' holds non-integer values \(\d+\.5 at index \(0, 0\)\), "
                        r"but the Embedding 'embedding\w*' reads token ids"),
    (lambda t: t + 5, r"`train_data` input 'tokens' holds token ids in \[5, 14\], but the Embedding "
                      r"'embedding\w*' reading them has input_dim=10: ids must lie in \[0, 9\]"),
    (lambda t: t - 1, r"token ids in \[-1, 8\]"),
])
def test_token_ids_are_checked_against_the_embedding(no_training, tokens, match):
    features, ids, y = _two_input_data()
    with pytest.raises(ValueError, match=match):
        tf_vib.compress(_two_inputs(), ((features, tokens(ids)), y), verbose=0)


def test_an_integer_input_without_an_embedding_takes_only_integers():
    ids = keras.Input((T,), dtype="int32")
    h = keras.layers.Lambda(lambda t: tf.one_hot(t, 4))(ids)
    model = keras.Model(ids, keras.layers.Dense(3)(keras.layers.LSTM(4)(h)))
    y = np.arange(N) % 3
    big = np.full((N, T), 99, "int32")  # no Embedding reads the input: no range to check
    assert _prepare(model, (big, y), loss=SPARSE).train[0].dtype == np.int32
    with pytest.raises(ValueError, match=r"`train_data` inputs hold non-integer values \(0.5 at index \(0, 0\)\), "
                       r"but the model's int32 input reads token ids"):
        _prepare(model, (np.full((N, T), 0.5), y), loss=SPARSE)


# -- end to end: a two-input model and a per-step tagger -----------------------------------------

@pytest.mark.slow
def test_compress_a_two_input_model_with_token_ids():
    model = _two_inputs()
    features, tokens, y = _two_input_data(48)
    result = tf_vib.compress(model, ({"features": features, "tokens": tokens}, y), epochs=1, finetune_epochs=1,
                             batch_size=16, verbose=0, **FAST)
    data = _prepare(model, ({"features": features, "tokens": tokens}, y), validation_fraction=0.2)
    assert result.report.baseline.val_accuracy == pytest.approx(accuracy(model, data.val[0], data.labels_val))
    assert result.model.predict([features, tokens], verbose=0).shape == (48, 3)


@pytest.mark.slow
def test_compress_a_per_step_tagger():
    model = _tagger()
    x = _x(48)
    steps = (x[:, :, 0] > 0).astype(int) + (x[:, :, 1] > 1)
    result = tf_vib.compress(model, (x, steps), test_data=(x[:12], np.eye(3)[steps[:12]]), epochs=1,
                             finetune_epochs=1, batch_size=16, verbose=0, **FAST)
    predicted = np.argmax(model.predict(x[:12], verbose=0), axis=-1)
    assert result.report.baseline.test_accuracy == pytest.approx(np.mean(predicted == steps[:12]))
    assert result.model.predict(x[:2], verbose=0).shape == (2, T, 3)


def test_several_outputs_need_the_accuracy_metric(no_training):
    inputs = keras.Input((T, 3))
    h = keras.layers.LSTM(4)(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(3, name="kind")(h), keras.layers.Dense(1, name="size")(h)])
    model.compile(keras.optimizers.Adam(1e-2), [SPARSE, "mse"])
    y = np.arange(N) % 3
    with pytest.raises(ValueError, match=r"`model` has 2 outputs; compress\(\) scores several outputs by their "
                                         r"mean accuracy only.*received metric=None"):
        tf_vib.compress(model, (_x(), [y, y.astype("float32")]), verbose=0)
