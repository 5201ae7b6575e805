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
