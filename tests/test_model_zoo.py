"""Coverage is a table: every model of `model_zoo` through wrap, strip and the four TFLite modes.

Steps, for each builder:
  wrap: ``add_vib_masks`` leaves the user's model as it was (weights and config) and, at
    the warm start, predicts as it does;
  strip: with random partial masks, ``strip_masks`` predicts as the VIB model (inference
    mode) within 1e-5, with fewer parameters than the original;
  tflite_<mode>: the stripped model's file (all four modes from one ``to_tflite_many``
    call, one child process) meets `converters.verify`'s target against it.

`XFAIL` lists what fails on today's code, with the error; strict, so a fixed case fails until
its entry is deleted.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import all_weights, prune_partly, vib_masks
from model_zoo import BUILDERS

import converters
import tf_vib
from tf_vib._keras import keras
from tf_vib.compress._data import num_samples, take
from tf_vib.compress._defaults import STATE_GATES

MODES = converters.QUANTIZATIONS
FLOAT_MODES = [mode for mode in MODES if mode != "int8"]
EXACT = 1e-5
#: Conversions run this many at a time: a child process spends most of its time importing
#: TensorFlow, which two can do side by side.
CONVERSION_THREADS = 2
#: int8 is judged on samples whose top two scores differ by at least this share of the output
#: scale: the zoo's models are untrained, and a flip between near-equal scores says nothing.
DECISIVE_GAP = 0.05
#: Calibration samples per int8 file ("a few hundred typical samples", docs/deployment.md): with
#: 64, an input of the forecaster's test set beyond their range saturated (max diff 0.169).
CALIBRATION_SAMPLES = 256


#: builder -> {step: the error it fails with today}. Delete an entry when the step passes.
XFAIL = {
    "embedding_mask_zero_lstm": {
        "tflite_int8": ("ValueError: layer (LSTM) would become a WHILE loop, and full-int8 conversion of "
                        "WHILE loops crashes TFLite (TF 2.21); its input carries a Keras mask "
                        "(converters/plan/recurrent.py:plan_layer)"),
    },
}


def _params(step):
    params = []
    for name in BUILDERS:
        reason = XFAIL.get(name, {}).get(step)
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


def _outputs(model, x):
    predicted = model.predict(x, verbose=0)
    return [np.asarray(p) for p in (predicted if isinstance(predicted, list) else [predicted])]


def _max_diff(a, b, x):
    return max(float(np.max(np.abs(p - q))) for p, q in zip(_outputs(a, x), _outputs(b, x), strict=True))


def _dtypes(model):
    return [t.dtype for t in model.inputs]


def _convert(model, **kwargs):
    """{mode: bytes or the error}: all modes in one call; if that fails, the float modes in one
    and int8 in another (int8 is refused or crashes alone more often than not)."""
    try:
        return converters.to_tflite_many(model, MODES, **kwargs)
    except Exception:  # noqa: BLE001 - find out which modes fail, and why
        files = {}
        for group in (FLOAT_MODES, ["int8"]):
            try:
                files.update(converters.to_tflite_many(model, group, **kwargs))
            except Exception as error:  # noqa: BLE001 - each mode's step raises it
                files.update(dict.fromkeys(group, error))
        return files


def _decisive(model, x, kind):
    """The samples of ``x`` on which the model's class (every step's, for a tagger) is clear."""
    if kind == "regressor":
        return x
    scores = np.sort(_outputs(model, x)[0], axis=-1)  # the first output: the class head
    gap = (scores[..., -1] - scores[..., -2]).reshape(len(scores), -1).min(axis=-1)
    return take(x, np.flatnonzero(gap >= DECISIVE_GAP * float(np.abs(scores).max())))


class _Zoo:
    """Each builder's stages, computed once per module; a stage's error is kept and re-raised."""

    def __init__(self, pool):
        self.pool = pool
        self.done = {}
        self.conversions = {}

    def get(self, stage, name):
        key = (stage, name)
        if key not in self.done:
            try:
                self.done[key] = (getattr(self, stage)(name), None)
            except Exception as error:  # noqa: BLE001 - re-raised by every step that needs it
                self.done[key] = (None, error)
        value, error = self.done[key]
        if error is not None:
            raise error
        return value

    def wrapped(self, name):
        keras.utils.set_random_seed(0)
        case = BUILDERS[name]()
        before = (all_weights(case.model), case.model.get_config())
        # compress()'s masks: on the state (LSTM output gate, GRU and SimpleRNN candidate),
        # the input features and hidden Dense units. Every gate's fold is tested in test_surgery.
        vib = tf_vib.add_vib_masks(case.model, masked_gates=STATE_GATES)
        x, _ = case.data(32, seed=1)
        return case, before, vib, _max_diff(case.model, vib, x)

    def stripped(self, name):
        vib = self.get("wrapped", name)[2]
        prune_partly(vib, np.random.default_rng(0))
        return tf_vib.strip_masks(vib)

    def converted(self, name):
        """{mode: bytes or the error}, all modes from one child process when they all convert."""
        if not self.conversions:
            # Every model is built before the first conversion thread starts, so that those
            # threads cannot change the random weights the seed gives a model.
            for other in BUILDERS:
                try:
                    case, small = self.get("wrapped", other)[0], self.get("stripped", other)
                except Exception:  # noqa: BLE001 - the strip step reports it
                    continue
                self.conversions[other] = self.pool.submit(
                    _convert, small, representative_data=case.data(CALIBRATION_SAMPLES, seed=2)[0],
                    time_steps=case.time_steps)
        self.get("stripped", name)
        return self.conversions[name].result()


@pytest.fixture(scope="module")
def zoo():
    with ThreadPoolExecutor(CONVERSION_THREADS) as pool:
        yield _Zoo(pool)
    keras.backend.clear_session()


@pytest.fixture(autouse=True)
def _seed():
    """Replaces conftest's: its clear_session() between tests would reset Keras's state under
    the conversion threads. Each builder seeds itself (`_Zoo.wrapped`)."""
    yield


def _untouched(case, weights, config):
    after = all_weights(case.model)
    assert len(after) == len(weights)
    assert all(np.array_equal(a, b) for a, b in zip(after, weights, strict=True))
    assert case.model.get_config() == config


@pytest.mark.parametrize("name", _params("wrap"))
def test_wrap_leaves_the_model_untouched_and_predicts_as_it(zoo, name):
    case, (weights, config), vib, warm_diff = zoo.get("wrapped", name)
    _untouched(case, weights, config)
    assert vib is not case.model
    assert _dtypes(vib) == _dtypes(case.model)
    assert warm_diff <= EXACT


@pytest.mark.parametrize("name", _params("strip"))
def test_strip_predicts_as_the_vib_model_with_fewer_parameters(zoo, name):
    case, (weights, config), vib, _ = zoo.get("wrapped", name)
    small = zoo.get("stripped", name)
    _untouched(case, weights, config)
    assert _dtypes(small) == _dtypes(case.model)
    x, _ = case.data(32, seed=1)
    assert _max_diff(small, vib, x) <= EXACT
    if any(mask.units > 1 for _, _, mask in vib_masks(vib)):
        assert small.count_params() < case.model.count_params()
    else:  # add_vib_masks found nothing to mask
        assert small.count_params() == case.model.count_params()


def _tflite_cases():
    return [pytest.param(param.values[0], mode, id=f"{param.values[0]}-{mode}", marks=param.marks)
            for mode in MODES for param in _params(f"tflite_{mode}")]


@pytest.mark.parametrize(("name", "mode"), _tflite_cases())
def test_tflite_file_meets_its_target(zoo, name, mode):
    case = zoo.get("wrapped", name)[0]
    small = zoo.get("stripped", name)
    flat = zoo.get("converted", name)[mode]
    if isinstance(flat, Exception):
        raise flat
    # TFLite's dynamic-range quantizer leaves weight tensors of < 1024 values in float, so
    # the zoo's tiny models come back as float32 files; they must then meet dynamic's target.
    expected = ("dynamic", "float32") if mode == "dynamic" else (mode,)
    assert converters.describe_tflite(flat).quantization in expected
    x, _ = case.data(96 if mode == "int8" else 32, seed=3)
    if mode == "int8":
        x = _decisive(small, x, case.kind)
        assert num_samples(x) >= 16, "too few samples with a clear class to judge int8 on"
    result = converters.verify(small, flat, x, quantization=mode)
    assert result.passed, str(result)


def test_the_xfail_table_names_real_builders_and_steps():
    steps = {"wrap", "strip", *(f"tflite_{mode}" for mode in MODES)}
    assert set(XFAIL) <= set(BUILDERS)
    assert all(set(entry) <= steps for entry in XFAIL.values())
