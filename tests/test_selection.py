"""Candidate choice: the search order, trials that stop at the bound, cached snapshot sizes, scorers."""

import numpy as np
import pytest

import tf_vib
from tf_vib._keras import keras
from tf_vib.compress import _candidates, _scorer
from tf_vib.compress._candidates import Candidate, Snapshots, StopAtScore, choose_smallest
from tf_vib.compress._scorer import Scorer, make_scorer
from tf_vib.wrap import add_vib_masks


@pytest.fixture
def vib_model():
    model = keras.Sequential([keras.Input((4, 3)), keras.layers.LSTM(6), keras.layers.Dense(2)])
    return add_vib_masks(model, masked_gates="o")


class _FakeVIB:
    """Stands in for the VIB model: "stripping" it returns the weights last loaded."""

    def set_weights(self, weights):
        self.current = weights


def _search(monkeypatch, masked, passes, floor=0.9, **kwargs):
    """choose_smallest over candidates of growing size, with masked accuracies ``masked``,
    whose fine-tune reaches ``passes[i]``; returns (chosen index, accuracy, trial order)."""
    candidates = [Candidate(epoch, 0.0, 100 * (i + 1), accuracy, [i])
                  for i, (epoch, accuracy) in enumerate(masked)]
    monkeypatch.setattr(_candidates, "strip_masks", lambda model, **kwargs: model.current)
    tried = []

    def tune(plain, target):
        tried.append(plain[0])
        return passes[plain[0]]

    chosen, _, accuracy, _ = choose_smallest(_FakeVIB(), candidates, Scorer("accuracy", True, bound=floor), tune,
                                             **kwargs)
    return candidates.index(chosen), accuracy, tried


def test_search_starts_from_the_smallest_candidate_that_already_passes(monkeypatch):
    # candidate 5 reaches the floor before fine-tuning; 2..4 pass after it, 0..1 do not
    masked = [(9, 0.5), (8, 0.5), (7, 0.5), (6, 0.5), (5, 0.5), (4, 0.95), (3, 0.5), (2, 0.5)]
    passes = [0.8, 0.8, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95]
    chosen, accuracy, tried = _search(monkeypatch, masked, passes)
    assert chosen == 2 and accuracy == 0.95
    assert tried[0] == 5, "the known pass is confirmed first, the largest is never tried"
    assert 7 not in tried and len(tried) <= 4


def test_search_falls_back_to_the_largest_when_the_known_pass_fails(monkeypatch):
    masked = [(4, 0.5), (3, 0.95), (2, 0.5), (1, 0.5)]
    passes = [0.5, 0.5, 0.5, 0.95]
    chosen, accuracy, tried = _search(monkeypatch, masked, passes)
    assert tried[:2] == [1, 3]
    assert chosen == 3 and accuracy == 0.95


def test_search_on_miss_returns_the_smallest_as_good_as_the_best_tried(monkeypatch):
    masked = [(5, 0.1), (4, 0.2), (3, 0.2), (2, 0.2), (1, 0.3)]
    passes = [0.5, 0.5, 0.7, 0.6, 0.6]  # the floor, 0.9, is out of reach
    chosen, accuracy, tried = _search(monkeypatch, masked, passes, search_on_miss=True)
    assert tried[0] == 4, "the largest is tried first"
    assert chosen == 2 and accuracy == 0.7  # smaller than the largest, and better
    assert tried == [4, 2, 1, 0]
    chosen, accuracy, _ = _search(monkeypatch, masked, [0.5, 0.5, 0.5, 0.5, 0.6], search_on_miss=True)
    assert chosen == 4 and accuracy == 0.6  # nothing smaller does as well


def test_without_search_on_miss_an_out_of_reach_bound_ends_the_search(monkeypatch):
    masked = [(5, 0.1), (4, 0.2), (3, 0.2), (2, 0.2), (1, 0.3)]
    chosen, accuracy, tried = _search(monkeypatch, masked, [0.5, 0.5, 0.7, 0.6, 0.6])
    assert tried == [4] and chosen == 4 and accuracy == 0.6
    # the known pass (1) and the largest both fail: the better of the two, nothing else tried
    masked[1] = (4, 0.95)
    chosen, accuracy, tried = _search(monkeypatch, masked, [0.5, 0.8, 0.7, 0.6, 0.6])
    assert tried == [1, 4] and chosen == 1 and accuracy == 0.8


def test_search_on_miss_prefers_a_candidate_that_meets_the_bound(monkeypatch):
    # the largest misses (0.6); the fallback search aims at 0.6 and meets a 0.95 on the way
    masked = [(4, 0.1), (3, 0.1), (2, 0.1), (1, 0.1)]
    chosen, accuracy, tried = _search(monkeypatch, masked, [0.6, 0.95, 0.6, 0.6], search_on_miss=True)
    assert tried == [3, 1, 0] and chosen == 1 and accuracy == 0.95


def test_scan_below_the_bisection_finds_a_pass_under_one_unlucky_failure(monkeypatch):
    masked = [(6, 0.5), (5, 0.5), (4, 0.5), (3, 0.5), (2, 0.5), (1, 0.95)]
    chosen, _, tried = _search(monkeypatch, masked, [0.95, 0.5, 0.95, 0.95, 0.95, 0.95])
    assert chosen == 0 and tried == [5, 2, 1, 0]


def test_scan_stops_after_patience_failures_in_a_row(monkeypatch):
    masked = [(i, 0.5) for i in range(7)] + [(7, 0.95)]
    passes = [0.95, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.95]
    chosen, _, tried = _search(monkeypatch, masked, passes)
    # bisection: 3, 5, 6 fail; the scan skips 6 and 5, fails at 4, skips 3, fails at 2: stop
    assert chosen == 7 and tried == [7, 3, 5, 6, 4, 2]
    with pytest.raises(ValueError, match="`patience` must be an integer >= 1; received 0"):
        choose_smallest(_FakeVIB(), [], 0.9, lambda plain, target: 1.0, patience=0)


def test_the_scan_skips_the_bisections_failures_instead_of_stopping_on_them(monkeypatch):
    # From the known pass (6) the bisection passes at 3 and fails at 1 and 2. Counting those
    # two as the scan's failures would stop at 3; skipping them, the scan tries 0, which passes.
    masked = [(1, 0.5), (2, 0.5), (3, 0.5), (4, 0.5), (5, 0.5), (6, 0.5), (7, 0.95)]
    passes = [0.95, 0.5, 0.5, 0.95, 0.5, 0.95, 0.95]
    chosen, accuracy, tried = _search(monkeypatch, masked, passes)
    assert chosen == 0 and accuracy == 0.95
    assert tried == [6, 3, 1, 2, 0]


def test_candidates_that_differ_only_in_frames_are_each_tried_fewest_frames_first(monkeypatch):
    """Frame pruning leaves the parameter count as it is: a candidate with fewer frames at the
    same parameters is smaller (Candidate.cost), not a duplicate to drop."""
    monkeypatch.setattr(_candidates, "strip_masks", lambda model, **kwargs: model.current)
    candidates = [Candidate(9, 0.0, 500, 0.5, ["8 frames"], frames=8),
                  Candidate(8, 0.0, 500, 0.5, ["3 frames"], frames=3),
                  Candidate(7, 0.0, 400, 0.5, ["400 x 8"], frames=8)]
    assert [c.cost for c in candidates] == [4000, 1500, 3200]
    passes = {"8 frames": 0.95, "3 frames": 0.95, "400 x 8": 0.5}
    tried = []

    def tune(plain, target):
        tried.append(plain[0])
        return passes[plain[0]]

    chosen, _, accuracy, trials = choose_smallest(_FakeVIB(), candidates, Scorer("accuracy", True, bound=0.9), tune)
    assert chosen.weights == ["3 frames"] and accuracy == 0.95
    assert "3 frames" in tried and len(trials) == len(tried)


def test_stop_at_score_ends_training_at_the_first_epoch_that_reaches_the_target():
    stop = StopAtScore(0.9)
    stop.set_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    for epoch, accuracy in enumerate([0.5, 0.89, 0.9]):
        stop.model.stop_training = False
        stop.on_epoch_end(epoch, {"val_accuracy": accuracy})
        assert stop.model.stop_training == (accuracy >= 0.9)
    assert stop.epochs == 3
    lower = StopAtScore(0.1, make_scorer("loss", loss=keras.losses.get("mse"), classifier=False))
    lower.set_model(stop.model)
    for epoch, mse in enumerate([0.3, 0.11, 0.1]):
        lower.model.stop_training = False
        lower.on_epoch_end(epoch, {"val_score": mse, "val_accuracy": 1.0})
        assert lower.model.stop_training == (mse <= 0.1)


def test_snapshots_strip_once_per_structure(vib_model, monkeypatch):
    calls = []
    real_strip = _candidates.strip_masks

    def counting_strip(model, **kwargs):
        calls.append(1)
        return real_strip(model, **kwargs)

    monkeypatch.setattr(_candidates, "strip_masks", counting_strip)
    snapshots = Snapshots(vib_model, epochs=4, threshold=0.0, count=4)
    mask = vib_model.layers[-2].cell.vib_masks["o"]
    for epoch in range(4):
        if epoch == 2:  # prune two units: a new structure
            mask.log_sigma2.assign(np.array([5, 5, -9, -9, -9, -9], "float32"))
        snapshots.on_epoch_end(epoch, {"val_accuracy": 0.5})
    assert len(snapshots.candidates) == 4 and len(calls) == 2
    params = [c.params for c in snapshots.candidates]
    assert params[0] == params[1] > params[2] == params[3]
    assert params[2] == tf_vib.strip_masks(vib_model, threshold=0.0, min_units=1).count_params()


def test_snapshots_also_taken_when_the_structure_collapses(vib_model):
    snapshots = Snapshots(vib_model, epochs=10, threshold=0.0, count=2)  # scheduled: epochs 5, 10
    features, gate = snapshots._masks  # 3 input features, 6 units
    pruned = {1: (0, 4), 2: (3, 5), 3: (3, 6)}  # (features, units) pruned by the end of each epoch

    def prune(mask, count):
        log_sigma2 = np.full(mask.log_sigma2.shape, -9.0, "float32")
        log_sigma2[:count] = 5.0
        mask.log_sigma2.assign(log_sigma2)

    prune(features, 0), prune(gate, 0)
    snapshots.on_train_begin()
    assert snapshots.kept_units() == 9
    for epoch in range(4):
        if epoch in pruned:
            prune(features, pruned[epoch][0]), prune(gate, pruned[epoch][1])
        snapshots.on_epoch_end(epoch, {"val_accuracy": 0.5})
    # epoch 1: 5 of 9 kept, no snapshot; epoch 2: 1 kept <= 9 / 4: one; epoch 3: 0 <= 1 / 4: one
    assert [c.epoch for c in snapshots.candidates] == [2, 3]
    snapshots.on_epoch_end(4, {"val_accuracy": 0.5})  # scheduled; nothing kept, nothing more to catch
    snapshots.on_epoch_end(5, {"val_accuracy": 0.5})
    assert [c.epoch for c in snapshots.candidates] == [2, 3, 4]


def test_scorers_follow_the_model_and_the_metric():
    classifier = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert _scorer.is_classifier(classifier, cross_entropy)
    regressor = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    mse = keras.losses.get("mse")
    assert not _scorer.is_classifier(regressor, mse) and not _scorer.is_classifier(classifier, mse)
    x = np.random.default_rng(0).normal(size=(10, 3)).astype("float32")
    labels, targets = np.arange(10) % 4, np.linspace(-1, 1, 10).astype("float32")
    accuracy = make_scorer(None, loss=cross_entropy, classifier=True)
    predicted = np.argmax(classifier.predict(x, verbose=0), -1)
    assert accuracy.higher_is_better and accuracy.score(classifier, x, labels) == np.mean(predicted == labels)
    assert accuracy.score(classifier, x, np.eye(4)[labels]) == np.mean(predicted == labels)  # one-hot
    loss = make_scorer("loss", loss=cross_entropy, classifier=True)  # the batch mean of the loss
    assert loss.name == "sparse_categorical_crossentropy" and not loss.higher_is_better
    assert loss.score(classifier, x, labels) == pytest.approx(float(cross_entropy(labels, classifier(x))), rel=1e-5)
    default = make_scorer(None, loss=mse, classifier=False)
    errors = regressor.predict(x, verbose=0)[:, 0] - targets
    assert default.name == "mean_squared_error" and not default.higher_is_better
    assert default.score(regressor, x, targets) == pytest.approx(np.mean(errors ** 2), rel=1e-5)
    mae = make_scorer("mae", loss=mse, classifier=False)
    assert (mae.name, mae.higher_is_better) == ("mae", False)
    assert mae.score(regressor, x, targets) == pytest.approx(np.mean(np.abs(errors)), rel=1e-5)
    auc = make_scorer(keras.metrics.AUC(), loss=mse, classifier=False)
    assert (auc.name, auc.higher_is_better) == ("auc", True) and auc.metric() is not auc.metric()
    bounded = default.bounded(0.1, 0.01)  # lower is better: the bound is a ceiling
    assert bounded.bound == pytest.approx(0.11) and bounded.meets(0.11) and not bounded.meets(0.111)
    assert bounded.condition() == "mean_squared_error <= 0.11"
    floor = accuracy.bounded(0.9, 0.05)
    assert floor.bound == pytest.approx(0.85) and floor.meets(0.85) and not floor.meets(0.84)


def test_several_outputs_are_scored_by_their_mean_logged_accuracy():
    logs = {"val_loss": 1.0, "val_kind_accuracy": 0.5, "val_flag_accuracy": 1.0, "kind_accuracy": 0.0}
    assert _scorer.ACCURACY.logged(logs) == 0.75
    assert _scorer.ACCURACY.logged({"val_accuracy": 0.25, "val_kind_accuracy": 1.0}) == 0.25
    assert _scorer.ACCURACY.logged({"val_loss": 1.0}) == -np.inf


def test_a_one_unit_logit_output_is_logged_at_the_threshold_it_is_scored_at():
    # Keras's "accuracy" of one unit thresholds at 0.5, right for a sigmoid: for a logit the
    # logged validation accuracy (fine-tuning's stop and best epoch) must read threshold 0
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4, 3)).astype("float32")
    y = (x[:, :, 0].sum(axis=1) > 0).astype("float32")
    model = keras.Sequential([keras.Input((4, 3)), keras.layers.LSTM(3), keras.layers.Dense(1)])
    model.layers[-1].set_weights([np.array([[1.0], [0.0], [0.0]], "float32"), np.array([-0.25], "float32")])
    loss = keras.losses.BinaryCrossentropy(from_logits=True)
    scorer = make_scorer(None, loss=loss, classifier=True, model=model)
    assert scorer.is_accuracy and scorer.logit_threshold == 0.0
    model.compile("adam", loss, metrics=[scorer.metric()])
    logged = model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]
    assert logged == pytest.approx(scorer.score(model, x, y), abs=1e-6)
    sigmoid = keras.Sequential([keras.Input((4, 3)), keras.layers.LSTM(3), keras.layers.Dense(1, "sigmoid")])
    assert make_scorer(None, loss="binary_crossentropy", classifier=True, model=sigmoid).logit_threshold is None
