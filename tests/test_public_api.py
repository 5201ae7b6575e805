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
    import converters

    assert not [name for name in converters.__all__ if isinstance(getattr(converters, name), types.ModuleType)]
    assert len(converters.__all__) <= 30


def _library_imports():
    """``{module: the library modules it imports}``, read from the source of tf_vib and
    converters, function-level imports included (a lazy import is a dependency too)."""
    import ast
    import pathlib

    root = pathlib.Path(tf_vib.__file__).parents[1]
    paths = {}
    for path in [*root.glob("tf_vib/**/*.py"), *root.glob("converters/**/*.py")]:
        parts = path.relative_to(root).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def known(name):  # the module itself, or the package whose name it is in
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for module, path in paths.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {known(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *[base][:bool(base)]])
                found |= {known(f"{base}.{a.name}") if f"{base}.{a.name}" in paths else known(base) for a in node.names}
        graph[module] = found - {"", module}
    return graph


def test_no_import_cycle_among_the_library_modules():
    graph = _library_imports()
    assert "converters._tflite_model" in graph["converters.runtime"]  # a relative import, resolved
    state, cycles = {}, []

    def visit(module, path):
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                cycles.append(path[path.index(imported):] + [imported])
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)
