"""The building blocks compress() chains: storage, ISS, low rank, tfmot stages, distillation."""

import numpy as np
import pytest
from helpers import all_weights, max_abs_diff

from tf_vib._keras import keras, tf
from tf_vib.compress._finetune import distill, distillation_loss, output_is_softmax
from tf_vib.compress._iss import (
    FreezeZeros,
    ISSPenalty,
    add_iss_penalty,
    iss_group_norms,
    zero_small_groups,
)
from tf_vib.compress._pruning import cluster, magnitude_prune
from tf_vib.layers import LowRankLSTMCell, VIBGRUCell, VIBLSTMCell
from tf_vib.lowrank import low_rank, merge_low_rank
from tf_vib.sizes import (
    clustered_storage,
    gzip_size,
    huffman_bits,
    huffman_code_lengths,
    nonzero_params,
)

# -- storage ------------------------------------------------------------------------------


def test_huffman_matches_the_textbook_example():
    # CLRS 16.3: a..f with frequencies 45, 13, 12, 16, 9, 5 -> codes of 1, 3, 3, 3, 4, 4 bits
    np.testing.assert_array_equal(huffman_code_lengths([45, 13, 12, 16, 9, 5]), [1, 3, 3, 3, 4, 4])
    assert huffman_bits([45, 13, 12, 16, 9, 5]) == 224
    np.testing.assert_array_equal(huffman_code_lengths([0, 7, 0]), [0, 1, 0])
    assert huffman_bits([4, 2, 1, 0]) == 4 * 1 + 2 * 2 + 1 * 2


def test_clustered_storage_counts_codebook_indices_and_relative_gaps():
    w = np.zeros(40, "float32")
    w[[2, 3]], w[39] = 0.5, -1.0
    report = clustered_storage({"w": w}, gap_bits=3)
    # Gaps 3, 1, 36 with 3-bit gaps (at most 8): 36 needs 4 filler zeros -> 7 entries.
    # Codes {0.5: 2, -1: 1, filler 0: 4}: 2-bit indices = 14 bits; Huffman 4*1 + 2*2 + 1*2 = 10.
    (row,) = report.tensors
    assert row.encoding == "sparse-codebook" and row.n_clusters == 3
    assert (report.codebook_bits, report.index_bits, report.huffman_bits) == (96, 14, 10)
    assert report.sparse_index_bits == 7 * 3
    assert report.total_bytes == 16  # ceil(127 / 8)
    assert report.dense_bytes_float32 == 160 and report.nonzero == 3
    assert report.compression_ratio == pytest.approx(10.0)


def test_unclustered_weights_are_counted_as_float32():
    w = np.random.default_rng(0).normal(size=(20, 30)).astype("float32")
    report = clustered_storage([w])
    assert report.tensors[0].encoding == "dense-float32"
    assert report.total_bytes == 20 * 30 * 4 and report.codebook_bits == 0
    with pytest.raises(ValueError, match=r"`index_bits` must be an integer in \[1, 32\]; received 0"):
        clustered_storage([w], index_bits=0)


def test_gzip_size_and_nonzero_params():
    zeros, noise = np.zeros(4000, "float32"), np.random.default_rng(0).normal(size=4000).astype("float32")
    assert gzip_size(zeros) < 100 < 14000 < gzip_size(noise)
    assert gzip_size([zeros, noise]) == gzip_size(np.concatenate([zeros, noise]).tobytes())
    with pytest.raises(TypeError, match="`data` must be bytes"):
        gzip_size("weights")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    model.set_weights([np.eye(3, 4, dtype="float32"), np.zeros(4, "float32")])
    assert nonzero_params(model) == 3


# -- ISS group lasso ------------------------------------------------------------------------


def _stack(rng=None):
    inputs = keras.Input((6, 5))
    x = keras.layers.LSTM(3, return_sequences=True)(inputs)
    x = keras.layers.Dropout(0.1)(x)
    x = keras.layers.GRU(2)(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    if rng is not None:
        model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def _brute_force_norm(units, gates, kernel, recurrent, bias, consumer):
    """Union of the group's weights, each counted once, listed element by element."""
    norms = []
    for k in range(units):
        group = {}
        for g in range(gates):
            column = g * units + k
            group.update({("k", i, column): kernel[i, column] for i in range(kernel.shape[0])})
            group.update({("r", i, column): recurrent[i, column] for i in range(units)})
            group.update({("b", i, column): v for i, v in enumerate(bias.reshape(-1, gates * units)[:, column])})
        group.update({("r", k, j): recurrent[k, j] for j in range(recurrent.shape[1])})
        group.update({("c", k, j): consumer[k, j] for j in range(consumer.shape[1])})
        norms.append(np.sqrt(sum(v**2 for v in group.values())))
    return np.array(norms)


def test_group_norms_and_penalty_match_the_union_of_each_units_weights(rng):
    model = _stack(rng)
    w = model.get_weights()  # lstm k, r, b; gru k, r, b (2, 6); dense k, b
    norms = iss_group_norms(model)
    np.testing.assert_allclose(norms["lstm"], _brute_force_norm(3, 4, w[0], w[1], w[2], w[3]), rtol=1e-5)
    np.testing.assert_allclose(norms["gru"], _brute_force_norm(2, 3, w[3], w[4], w[5], w[6]), rtol=1e-5)
    penalty = add_iss_penalty(model, 0.5)
    expected = 0.5 * (norms["lstm"].sum() + norms["gru"].sum())
    assert float(penalty()) == pytest.approx(expected, rel=1e-5)
    assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-5)


def test_penalty_gradient_is_lambda_w_over_group_norm(rng):
    model = _stack(rng)
    kernel = model.layers[1].cell.kernel  # its entries belong to exactly one group each
    with tf.GradientTape() as tape:
        value = ISSPenalty(model, 0.2)()
    gradient = tape.gradient(value, kernel).numpy()
    norms = np.tile(iss_group_norms(model)["lstm"], 4)
    np.testing.assert_allclose(gradient, 0.2 * kernel.numpy() / norms[None, :], rtol=1e-4)


@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_v1", "vib_lstm", "vib_gru"])
def test_unit_with_zero_group_outputs_zero_at_every_step(kind, rng):
    layer = {
        "lstm": lambda: keras.layers.LSTM(6, return_sequences=True),
        "gru": lambda: keras.layers.GRU(6, return_sequences=True),
        "gru_v1": lambda: keras.layers.GRU(6, return_sequences=True, reset_after=False),
        "vib_lstm": lambda: keras.layers.RNN(VIBLSTMCell(6), return_sequences=True),
        "vib_gru": lambda: keras.layers.RNN(VIBGRUCell(6), return_sequences=True),
    }[kind]()
    inputs = keras.Input((7, 5))
    hidden = layer(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    for w in model.weights:
        if "mask" not in w.name and "kl_weight" not in w.name:
            w.assign(rng.normal(0.0, 1.0, w.shape))
    dead = np.array([False, True, False, False, True, False])
    units = 6
    for w in (layer.cell.kernel, layer.cell.recurrent_kernel, layer.cell.bias):
        value = w.numpy()
        value[..., np.tile(dead, value.shape[-1] // units)] *= 1e-6
        w.assign(value)
    layer.cell.recurrent_kernel.assign(layer.cell.recurrent_kernel.numpy() * np.where(dead, 1e-6, 1.0)[:, None])
    model.layers[-1].kernel.assign(model.layers[-1].kernel.numpy() * np.where(dead, 1e-6, 1.0)[:, None])
    zeroed = zero_small_groups(model, threshold=1e-4)
    np.testing.assert_array_equal(zeroed[layer.name], dead)
    assert not np.any(layer.cell.recurrent_kernel.numpy()[dead])  # rows as well as columns
    assert not np.any(model.layers[-1].kernel.numpy()[dead])
    x = rng.normal(size=(4, 7, 5)).astype("float32")
    h = keras.Model(inputs, hidden)(x).numpy()
    assert np.all(h[..., dead] == 0.0), "h of a zeroed unit is exactly 0 at every step"
    assert np.all(np.abs(h[..., ~dead]).max(axis=(0, 1)) > 1e-3)
    np.testing.assert_allclose(iss_group_norms(model)[layer.name][dead], 0.0)


def test_freeze_zeros_keeps_groups_at_zero_while_fine_tuning(rng):
    model = _stack(rng)
    model.layers[1].cell.kernel.assign(model.layers[1].cell.kernel.numpy() * 0)  # not a whole group
    zeroed = zero_small_groups(model, threshold=0.5, criterion="l2")
    assert not any(v.any() for v in zeroed.values())
    zeroed = {"lstm": np.array([True, False, False]), "gru": np.array([False, True])}
    model.compile(keras.optimizers.Adam(0.05), "mse")
    x, y = rng.normal(size=(16, 6, 5)), rng.normal(size=(16, 4))
    callback = FreezeZeros(zeroed)
    model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[callback])
    norms = iss_group_norms(model)
    assert norms["lstm"][0] == 0 and norms["gru"][1] == 0
    assert norms["lstm"][1:].min() > 0.1 and norms["gru"][0] > 0.1
    frozen = FreezeZeros()  # picks up the groups that are entirely zero
    model.fit(x, y, epochs=1, batch_size=4, verbose=0, callbacks=[frozen])
    np.testing.assert_array_equal(frozen.zeroed["lstm"], [True, False, False])
    assert iss_group_norms(model)["lstm"][0] == 0


# -- low rank ---------------------------------------------------------------------------------


def _recurrent_stack():
    return keras.Sequential([
        keras.Input((6, 5)),
        keras.layers.LSTM(8, return_sequences=True),
        keras.layers.GRU(4),
        keras.layers.Dense(3),
    ])


def test_full_rank_factorisation_reproduces_predictions(rng):
    model = _recurrent_stack()
    before = all_weights(model)
    factored, info = low_rank(model, rank=1000, only_if_smaller=False)
    assert [layer.name for layer in factored.layers] == ["lstm_low_rank", "lstm", "gru_low_rank", "gru", "dense"]
    assert isinstance(factored, keras.Sequential)
    assert info["lstm"].rank == info["lstm"].full_rank == 5 and info["gru"].rank == 8
    x = rng.normal(size=(10, 6, 5)).astype("float32")
    assert max_abs_diff(model, factored, x) < 1e-5
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_lower_rank_reduces_parameters_in_a_functional_model(rng):
    inputs = keras.Input((6, 40))
    x = keras.layers.LSTM(16)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    low = rng.normal(size=(40, 5)) @ rng.normal(size=(5, 64)) * 0.1  # rank 5, plus noise
    model.layers[1].cell.kernel.assign(low + rng.normal(0, 1e-3, (40, 64)))
    factored, info = low_rank(model, energy=0.999)
    row = info["lstm"]
    assert row.factorised and row.rank == 5
    assert row.params_after == row.params_before - 40 * 64 + row.rank * (40 + 64)
    assert factored.count_params() == model.count_params() - row.params_before + row.params_after
    s = np.linalg.svd(model.layers[1].cell.kernel.numpy(), compute_uv=False)
    energy = np.cumsum(s**2) / np.sum(s**2)
    assert energy[row.rank - 1] >= 0.999 > energy[row.rank - 2]
    assert row.relative_error == pytest.approx(np.sqrt(1 - energy[row.rank - 1]), rel=1e-3)
    x = rng.normal(size=(8, 6, 40)).astype("float32")
    assert 0 < max_abs_diff(model, factored, x) < 1e-2
    _, whole = low_rank(model, rank=39)  # 39 * (40 + 64) > 40 * 64: nothing to gain
    assert not whole["lstm"].factorised and whole["lstm"].params_after == whole["lstm"].params_before


def test_low_rank_arguments_are_checked():
    model = _recurrent_stack()
    with pytest.raises(ValueError, match="exactly one of `rank` and `energy`"):
        low_rank(model, rank=2, energy=0.9)
    with pytest.raises(ValueError, match=r"`energy` must be a number in \(0, 1\]; received 1.5"):
        low_rank(model, energy=1.5)
    with pytest.raises(ValueError, match=r"`layers` .*\['lstm', 'gru'\].*\['dense'\]"):
        low_rank(model, rank=2, layers=["dense"])


def test_both_kernels_at_full_rank_reproduce_the_model_and_merge_back(rng, tmp_path):
    import converters

    model = keras.Sequential([keras.Input((6, 5)), keras.layers.LSTM(8, return_sequences=True, go_backwards=True,
                                                                     dropout=0.1, activity_regularizer="l2",
                                                                     name="lstm"),
                              keras.layers.GRU(4, name="gru"), keras.layers.Dense(3)])
    before = all_weights(model)
    factored, info = low_rank(model, rank=1000, only_if_smaller=False, kernels="both")
    assert sorted(info) == ["gru", "lstm", "lstm/recurrent"]  # a GRU's recurrent kernel stays whole
    assert (info["lstm/recurrent"].kernel, info["lstm/recurrent"].rank) == ("recurrent", 8)
    lstm = factored.get_layer("lstm")
    assert isinstance(lstm.cell, LowRankLSTMCell) and lstm.go_backwards and lstm.return_sequences
    assert lstm.cell.dropout == 0.1 and [tuple(w.shape) for w in lstm.cell.weights] == [(5, 32), (8, 8), (8, 32), (32,)]
    x = rng.normal(size=(10, 6, 5)).astype("float32")
    assert max_abs_diff(model, factored, x) < 1e-5
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    merged = merge_low_rank(factored)
    assert type(merged.get_layer("lstm")) is keras.layers.LSTM and merged.get_layer("lstm").go_backwards
    assert all(m.get_layer("lstm").activity_regularizer is not None for m in (factored, merged))
    assert max_abs_diff(model, merged, x) < 1e-5
    factored.save(tmp_path / "factored.keras")
    assert max_abs_diff(factored, keras.models.load_model(tmp_path / "factored.keras"), x) == 0.0
    flat = converters.to_tflite(factored, quantization="float32", isolate=False)  # a loop over time
    assert converters.verify(factored, flat, x).max_abs_diff <= 1e-5


def test_a_low_rank_recurrent_kernel_has_fewer_parameters(rng):
    model = keras.Sequential([keras.Input((6, 5)), keras.layers.LSTM(10, name="lstm"), keras.layers.Dense(3)])
    low = rng.normal(size=(10, 2)) @ rng.normal(size=(2, 40)) * 0.2  # rank 2, plus noise
    model.get_layer("lstm").cell.recurrent_kernel.assign(low + rng.normal(0, 1e-4, (10, 40)))
    factored, info = low_rank(model, energy=0.9999, kernels="recurrent")
    row = info["lstm/recurrent"]
    assert row.factorised and row.rank == 2 and "lstm" not in info
    assert row.params_after == row.params_before - 10 * 40 + 2 * (10 + 40)
    assert factored.count_params() == model.count_params() - row.params_before + row.params_after
    assert factored.layers[0].name == "lstm"  # no input factor with kernels="recurrent"
    assert 0 < max_abs_diff(model, factored, rng.normal(size=(8, 6, 5)).astype("float32")) < 1e-3
    _, whole = low_rank(model, rank=8, kernels="recurrent")  # 8 * 50 >= 400: nothing to gain
    assert not whole["lstm/recurrent"].factorised


def test_low_rank_recurrent_arguments_are_checked():
    model = _recurrent_stack()
    with pytest.raises(ValueError, match="`kernels` must be one of 'input', 'recurrent', 'both'; received 'all'"):
        low_rank(model, rank=2, kernels="all")
    regularized = keras.Sequential([keras.Input((6, 5)), keras.layers.LSTM(4, recurrent_regularizer="l2", name="r")])
    with pytest.raises(ValueError, match="layer 'r' has a recurrent_regularizer.*kernels=\"input\""):
        low_rank(regularized, rank=2, kernels="both")
    with pytest.raises(ValueError, match="`recurrent_constraint` acts on a full recurrent matrix.*accepted: None"):
        LowRankLSTMCell(4, 2, recurrent_constraint="non_neg")
    with pytest.raises(ValueError, match="`rank` must be an integer >= 1; received 0"):
        LowRankLSTMCell(4, 0)


def test_low_rank_cell_lists_every_keras_argument_with_its_default():
    import inspect

    def parameters(cls):
        return {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()
                if n not in ("self", "rank") and p.kind is not p.VAR_KEYWORD}

    assert parameters(LowRankLSTMCell) == parameters(keras.layers.LSTMCell)


# -- tfmot stages and distillation --------------------------------------------------------------


def _task(n=48):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6, 5)).astype("float32")
    y = (x[:, :, 0].mean(1) > 0).astype("int32") + (x[:, :, 1].mean(1) > 0)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(8), x


def _classifier(activation="softmax"):
    return keras.Sequential([
        keras.Input((6, 5)),
        keras.layers.LSTM(8, name="lstm"),
        keras.layers.Dense(3, activation=activation, name="dense"),
    ])


def _unwrapped(model):
    return all(type(layer).__module__.startswith("tf_keras") for layer in model.layers)


def test_magnitude_prune_then_cluster_reach_their_targets_on_plain_copies():
    ds, x = _task()
    model = _classifier()
    before = all_weights(model)
    pruned, info = magnitude_prune(model, ds, sparsity=0.75, epochs=3, verbose=0,
                                   loss="sparse_categorical_crossentropy")
    assert _unwrapped(pruned) and [type(layer) for layer in pruned.layers] == [keras.layers.LSTM, keras.layers.Dense]
    for name in ("lstm/kernel", "lstm/recurrent_kernel", "dense/kernel"):
        assert info.weight_sparsity[name] == pytest.approx(0.75, abs=0.02)
    assert info.nonzero_params == sum(np.count_nonzero(w) for w in pruned.get_weights())
    assert info.total_params == model.count_params()
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))

    clustered, cinfo = cluster(pruned, ds, n_clusters=6, epochs=1, verbose=0,
                               loss="sparse_categorical_crossentropy")
    assert _unwrapped(clustered)
    assert cinfo.clustered_weights == ("lstm/kernel", "lstm/recurrent_kernel")  # dense: 6 non-zeros
    assert cinfo.unique_values["lstm/kernel"] <= 6 and cinfo.unique_values["lstm/bias"] > 6
    for layer_before, layer_after in zip(pruned.layers, clustered.layers, strict=True):
        kept_zero = layer_after.get_weights()[0][layer_before.get_weights()[0] == 0]
        assert not np.any(kept_zero), f"{layer_after.name}: pruned zeros survive clustering"
    assert clustered_storage(clustered).total_bytes < clustered_storage(model).total_bytes / 3


def test_distillation_loss_golden_value():
    s = np.array([[2.0, 0.0, -1.0]], "float32")
    t = np.array([[0.0, 1.0, 0.0]], "float32")
    temperature = 2.0
    p_t, log_p_s = np.exp(t / temperature), s / temperature
    p_t /= p_t.sum()
    log_p_s = log_p_s - np.log(np.exp(log_p_s).sum())
    hard = -(s[0, 1] - np.log(np.exp(s).sum()))
    kl = np.sum(p_t * (np.log(p_t) - log_p_s))
    expected = 0.3 * hard + 0.7 * temperature**2 * kl
    got = distillation_loss(np.array([1]), s, t, alpha=0.3, beta=0.7, temperature=temperature)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    one_hot = distillation_loss(np.eye(3)[[1]], s, t, alpha=0.3, beta=0.7, temperature=temperature)
    assert float(one_hot) == pytest.approx(expected, rel=1e-5)


def test_output_kind_detection_sees_through_layers_and_wrappers():
    assert output_is_softmax(_classifier("softmax"))
    assert not output_is_softmax(_classifier(None))
    softmax_layer = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Softmax()])
    assert output_is_softmax(softmax_layer)
    import tensorflow_model_optimization as tfmot

    assert output_is_softmax(tfmot.sparsity.keras.prune_low_magnitude(_classifier("softmax")))


def test_distill_returns_a_trained_plain_copy_and_keeps_zeros():
    ds, x = _task()
    teacher = _classifier("softmax")
    student = _classifier(None)  # logits student against a softmax teacher
    kernel = student.layers[0].cell.kernel
    kernel.assign(kernel.numpy() * (np.arange(kernel.shape[1]) % 2))
    teacher_before, student_before = all_weights(teacher), all_weights(student)
    trained, info = distill(student, teacher, ds, epochs=2, temperature=3.0, verbose=0)
    assert type(trained) is keras.Sequential and _unwrapped(trained)
    assert len(info.history["loss"]) == 2 and "accuracy" in info.history
    assert all(np.array_equal(a, b) for a, b in zip(teacher_before, teacher.get_weights(), strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(student_before, student.get_weights(), strict=True))
    assert max_abs_diff(student, trained, x) > 1e-4
    new_kernel = trained.layers[0].cell.kernel.numpy()
    assert not np.any(new_kernel[:, ::2]) and np.all(new_kernel[:, 1::2] != 0)


@pytest.mark.slow
def test_stages_fine_tune_against_a_teacher():
    ds, _ = _task()
    teacher = _classifier()
    pruned, info = magnitude_prune(teacher, ds, sparsity={"lstm": 0.5}, epochs=2, teacher=teacher,
                                   distillation={"temperature": 2.0}, verbose=0)
    assert set(info.layer_sparsity) == {"lstm"}
    assert info.layer_sparsity["lstm"] == pytest.approx(0.5, abs=0.02)
    assert np.all(pruned.layers[1].kernel.numpy() != 0)
    clustered, cinfo = cluster(pruned, ds, n_clusters=4, epochs=1, teacher=teacher, verbose=0)
    assert max(cinfo.unique_values[name] for name in cinfo.clustered_weights) <= 4


@pytest.mark.parametrize("call,match", [
    (lambda m, ds: magnitude_prune(m, ds, sparsity=1.0, epochs=1, loss="mse"),
     r"`sparsity` must be a finite number > 0 and < 1; received 1.0"),
    (lambda m, ds: magnitude_prune(m, ds, sparsity={"gru": 0.5}, epochs=1, loss="mse"),
     r"`sparsity` as a dict must name prunable layers of the model \(\['lstm', 'dense'\]\)"),
    (lambda m, ds: magnitude_prune(m, ds, sparsity=0.5, epochs=1),
     r"`loss` is required unless a `teacher` is given"),
    (lambda m, ds: magnitude_prune(m, [1, 2], sparsity=0.5, epochs=1, loss="mse"),
     r"`train_ds` must be a batched tf.data.Dataset of \(x, y\); received list"),
    (lambda m, ds: magnitude_prune(m, ds, sparsity=0.5, epochs=1, loss="mse", begin_step=99),
     r"`begin_step` must be below 70% of the 6 training steps"),
    (lambda m, ds: cluster(m, ds, n_clusters=1, epochs=1, loss="mse"),
     r"`n_clusters` must be an integer >= 2; received 1"),
    (lambda m, ds: distill(m, m, ds, epochs=0), r"`epochs` must be an integer >= 1; received 0"),
    (lambda m, ds: distillation_loss([0], [[1.0, 0.0]], [[1.0, 0.0]], temperature=0),
     r"`temperature` must be a finite number > 0; received 0"),
    (lambda m, ds: FreezeZeros({"lstm": [1, 0]}), r"`zeroed` must be None or a dict"),
    (lambda m, ds: zero_small_groups(m, criterion="l1"), r"`criterion` must be 'max_abs' or 'l2'; received 'l1'"),
    (lambda m, ds: ISSPenalty(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), 1.0),
     r"has no LSTM, GRU or RNN\(VIB cell\) layer"),
])
def test_bad_arguments_name_the_argument_and_value(call, match):
    ds, _ = _task()
    with pytest.raises((ValueError, TypeError), match=match):
        call(_classifier(), ds)
