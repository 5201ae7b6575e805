"""The bound: compress() never returns a model that misses it on validation data, unless told."""

import sys
import types

import numpy as np
import pytest
from helpers import all_weights

import tf_vib
from tf_vib import BoundNotMetWarning
from tf_vib._keras import keras
from tf_vib.compress._scorer import ACCURACY

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

#: Settings no candidate survives: a KL weight that wrecks the masks within an epoch or two,
#: no fine-tuning to recover, and a bound at the baseline (one validation sample of slack).
WRECK = dict(epochs=2, finetune_epochs=0, kl_factor=10.0, mask_learning_rate=0.5, warmup_epochs=0,
             max_accuracy_drop=0.0, thresholds=(0.0,), unit_multiple=1, verbose=0)


def _data(n, seed):
    """Three classes, each lifting one of four features: a tiny LSTM fits them perfectly."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(0.0, 0.3, size=(n, 5, 4)).astype("float32")
    x[np.arange(n), :, y] += 2.0
    return x, y


@pytest.fixture(scope="module")
def perfect():
    """A trained LSTM(4) at 100% validation accuracy, its training and validation data."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 4)), keras.layers.LSTM(4), keras.layers.Dense(3)])
    model.compile(keras.optimizers.Adam(3e-2), LOSS, metrics=["accuracy"])
    train, val = _data(60, 0), _data(30, 1)
    model.fit(*train, epochs=8, verbose=0)
    assert ACCURACY.score(model, *val) == 1.0
    return model, train, val


def _best_trial(report):
    """(params, score) of the smallest of the best-scoring candidates fine-tuned."""
    best = max(t[2] for t in report.trials)
    return min(p for p, _, score in report.trials if score == best), best


def test_no_candidate_within_the_bound_returns_a_copy_of_the_original(perfect):
    model, train, val = perfect
    before = all_weights(model)
    with pytest.warns(BoundNotMetWarning, match=(
            r"Bound: validation accuracy >= 0\.9667 \(the baseline's 1\.0000 - 0\.0333\)\. vib: the best "
            r"candidate, fine-tuned, [\d,]+ parameters, reached validation accuracy 0\.\d{4}, missing the "
            r"bound: refused\. No compressed model met the bound: compress\(\) returned a copy of the "
            r"original model")):
        result = tf_vib.compress(model, train, validation_data=val, **WRECK)
    small, report = result.model, result.report
    assert small is not model
    assert [type(layer) for layer in small.layers] == [type(layer) for layer in model.layers]
    for a, b in zip(before, small.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # the user's model is untouched
    assert small.evaluate(*val, verbose=0)[1] == 1.0  # compiled, with the accuracy metric
    assert report.final is report.baseline and report.bound == pytest.approx(1 - 1 / 30)
    params, best = _best_trial(report)
    assert best < report.bound
    assert report.misses == [{"stage": "vib", "what": "the best candidate, fine-tuned", "params": params,
                              "val_score": best, "kept": False}]
    assert report.bound_met  # the copy meets it; the miss is in report.misses
    assert [(s.stage, s.kept, s.bound_met) for s in report.stages] == [("baseline", True, None),
                                                                        ("vib", False, False)]
    assert "vib (refused)" in str(report) and "returned a copy of the original model" in str(report)
    assert report.to_dict()["compression"]["params"] == 1.0


def test_on_miss_best_returns_the_best_candidate_labelled(perfect):
    model, train, val = perfect
    with pytest.warns(BoundNotMetWarning, match=r"kept \(on_miss='best'\)\..*The returned model misses the bound"):
        result = tf_vib.compress(model, train, validation_data=val, on_miss="best", **WRECK)
    report = result.report
    params, best = _best_trial(report)
    assert result.model.count_params() == params == report.final.params
    assert not any(tf_vib.layers.is_vib_layer(layer) for layer in result.model.layers)
    assert ACCURACY.score(result.model, *val) == pytest.approx(best) == report.final.val_score
    assert report.bound_met is False and report.to_dict()["bound_met"] is False
    assert [(m["stage"], m["kept"]) for m in report.misses] == [("vib", True), ("finetune", True)]
    assert report.final.stage == "finetune" and report.final.bound_met is False
    table = str(report)
    assert "missed" in table and "The returned model misses the bound." in table


def _wrecked_magnitude(model, *args, **kwargs):
    """Stands in for magnitude_prune: a copy of ``model`` with every weight at zero."""
    wrecked = keras.models.clone_model(model)
    wrecked.set_weights([np.zeros_like(w) for w in model.get_weights()])
    return wrecked, types.SimpleNamespace(history={})


@pytest.mark.parametrize("on_miss", ["original", "best"])
def test_a_later_stage_that_misses_the_bound_is_refused(perfect, monkeypatch, on_miss):
    model, train, val = perfect
    monkeypatch.setattr(sys.modules["tf_vib.compress._run"], "magnitude_prune", _wrecked_magnitude)
    with pytest.warns(BoundNotMetWarning, match="magnitude: its model"):
        result = tf_vib.compress(model, train, validation_data=val, vib=False, magnitude_sparsity=0.5,
                                 finetune_epochs=0, on_miss=on_miss, verbose=0)
    stages = result.report.stages
    assert [(s.stage, s.kept) for s in stages] == [("baseline", True), ("magnitude", on_miss == "best")]
    assert stages[1].val_score == pytest.approx(1 / 3)  # zero weights: one class for every sample
    kept = [np.zeros_like(w) for w in model.get_weights()] if on_miss == "best" else model.get_weights()
    for a, b in zip(kept, result.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert result.report.bound_met is (on_miss == "original")
