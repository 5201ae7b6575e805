"""The public surface: what tf_vib exports, and the deprecation path for names that moved."""

import importlib
import sys

import pytest

import tf_vib


@pytest.mark.parametrize("old,name", [("stages", "magnitude_prune"), ("stages", "Distiller"),
                                      ("schedules", "VIBSchedule"), ("regularizers", "ISSPenalty"),
                                      ("storage", "clustered_storage")])
def test_moved_modules_warn_and_still_work(old, name):
    sys.modules.pop(f"tf_vib.{old}", None)
    with pytest.warns(FutureWarning, match=rf"`tf_vib\.{old}` is deprecated .* removed in tf-vib 0\.3"):
        module = importlib.import_module(f"tf_vib.{old}")
    assert getattr(module, name) is getattr(tf_vib, name)


def _parameters(cls):
    import inspect

    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and p.kind is not p.VAR_KEYWORD}


@pytest.mark.parametrize("vib_cell,keras_cell", [
    ("VIBLSTMCell", "LSTMCell"), ("VIBGRUCell", "GRUCell"), ("VIBSimpleRNNCell", "SimpleRNNCell"),
])
def test_cells_list_every_keras_argument_with_its_default(vib_cell, keras_cell):
    from tf_vib._keras import keras

    ours = _parameters(getattr(tf_vib.layers, vib_cell))
    theirs = _parameters(getattr(keras.layers, keras_cell))
    missing = {name: default for name, default in theirs.items() if name not in ours}
    assert not missing, f"{vib_cell} does not list Keras's {missing}"
    differ = {name: (ours[name], default) for name, default in theirs.items() if ours[name] != default}
    assert not differ, f"{vib_cell} defaults differ from {keras_cell}'s: {differ}"
    mask_arguments = {"kl_factor", "kl_mult", "keep_threshold", "mu_initializer", "log_sigma2_initializer"}
    assert mask_arguments <= set(ours) and {"masked_gates", "hard_gates"} <= set(ours)


def test_feature_mask_lists_its_mask_arguments():
    assert set(_parameters(tf_vib.layers.FeatureMask)) == {
        "kl_factor", "kl_mult", "keep_threshold", "mu_initializer", "log_sigma2_initializer"}


def test_the_public_api_fits_on_one_screen():
    # entry points and layers only: no implementation module is exported
    import types

    modules = {name for name in tf_vib.__all__ if isinstance(getattr(tf_vib, name), types.ModuleType)}
    assert modules == {"datasets", "layers", "sizes"}
    assert len(tf_vib.__all__) <= 30
