"""Doctests of the library (``python -m pytest`` collects tf_vib/ and converters/ with
``--doctest-modules``): every example runs with these names in scope, on a fresh seed."""

import numpy as np
import pytest

# the deprecated aliases warn on import; their names are tested in tests/test_public_api.py
collect_ignore = [f"tf_vib/{name}.py" for name in ("regularizers", "schedules", "stages", "storage")]


@pytest.fixture(autouse=True)
def _doctest_names(request, doctest_namespace):
    if type(request.node).__name__ != "DoctestItem":  # tests/ have their own conftest
        yield
        return
    import converters
    import tf_vib
    from tf_vib._keras import keras, tf

    keras.utils.set_random_seed(0)
    doctest_namespace.update(np=np, tf=tf, keras=keras, tf_vib=tf_vib, converters=converters)
    yield
    keras.backend.clear_session()
