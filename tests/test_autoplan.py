"""quantization="auto" (int8 or float32 per layer, by a cost table) and the input standardisation in the file."""

import dataclasses
import json
import sys

import numpy as np
import pytest

import converters
from converters import _fallback as fallback_module
from converters import plan as planning
from converters import tflite as tflite_module
from converters.plan.quantization import DEFAULT_COST_TABLE, load_cost_table
from converters.runtime import load_interpreter
from tf_vib._keras import keras

STEPS, FEATURES = 26, 12
IMAGE = (32, 32, 16)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, *IMAGE)).astype(np.float32)
    offsets = rng.normal(size=(256, 2)).astype(np.float32)
    x[..., :2] += 3 * offsets[:, None, None, :]
    # Three classes by the signs of two channels' offsets: easy, so int8 keeps the accuracy.
    y = (offsets > 0).sum(axis=1)
    return x, y


@pytest.fixture(scope="module")
def cnn_lstm(data):
    """Conv2D(32) over rows read by an LSTM(4), trained a little.

    Sized to the shipped table's rows: the convolution (4.7M MACs, a 3x3 kernel) runs
    faster in int8 there, the small LSTM and the 3-class head slower.
    """
    x, y = data
    keras.utils.set_random_seed(0)
    inputs = keras.Input(IMAGE)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="tanh", name="conv")(inputs)
    h = keras.layers.Reshape((8, 256))(keras.layers.AveragePooling2D(4)(h))
    h = keras.layers.LSTM(4, name="lstm")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss="sparse_categorical_crossentropy")
    model.fit(x[:192], y[:192], epochs=6, batch_size=32, verbose=0)
    return model


def _modes(info):
    """``{layer: mode}`` from the file's recorded plan."""
    return {entry["layer"]: entry["mode"] for entry in info.tf_vib["quantization_plan"]}


def _op_dtype(info, op):
    return [dtype for name, dtype in zip(info.ops, info.op_input_dtypes, strict=True) if name == op]


def test_the_shipped_table_keeps_a_small_lstm_float_and_makes_the_convolution_int8(cnn_lstm, data):
    x, y = data
    flat = converters.to_tflite(cnn_lstm, quantization="auto", representative_data=x[:64])
    info = converters.describe_tflite(flat)
    assert _modes(info) == {"conv": "int8", "lstm": "float32", "head": "float32"}
    # The file does what the plan says: the convolution reads int8, the fused LSTM float32.
    assert _op_dtype(info, "CONV_2D") == ["int8"]
    assert _op_dtype(info, "UNIDIRECTIONAL_SEQUENCE_LSTM") == ["float32"]
    text = str(info)
    assert "conv (Conv2D) -> int8 (cost table" in text and "lstm (LSTM) -> float32 (cost table" in text
    verification = converters.verify(cnn_lstm, flat, x[192:], y[192:])
    assert verification.quantization == "int8" and verification.passed, verification
    assert verification.keras_accuracy > 0.6  # a model that learned: the int8 target is not trivial


def test_a_table_that_says_the_reverse_gives_the_reverse_plan(cnn_lstm, data):
    x, y = data
    row = {"macs": 1000}
    table = {"costs": {"ai-edge-litert": {"lstm": [{**row, "float32": 3, "int8": 1}],
                                          "conv": [{**row, "float32": 1, "int8": 3}],
                                          "dense": [{**row, "float32": 3, "int8": 1}]}}}
    flat = converters.to_tflite(cnn_lstm, quantization="auto", representative_data=x[:64], cost_table=table,
                                isolate=False)
    info = converters.describe_tflite(flat)
    assert _modes(info) == {"conv": "float32", "lstm": "int8", "head": "int8"}
    assert _op_dtype(info, "CONV_2D") == ["float32"]
    assert _op_dtype(info, "UNIDIRECTIONAL_SEQUENCE_LSTM") == ["int8"]
    assert _op_dtype(info, "FULLY_CONNECTED") == ["int8"]
    assert converters.verify(cnn_lstm, flat, x[192:], y[192:]).passed


def test_a_table_that_keeps_every_layer_float_gives_a_float32_file(cnn_lstm, data, tmp_path):
    x, _ = data
    table = {"costs": {"ai-edge-litert": {kind: [{"macs": 10, "float32": 1, "int8": 2}]
                                          for kind in ("lstm", "conv", "dense")}}}
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    flat = converters.to_tflite(cnn_lstm, quantization="auto", representative_data=x[:64], cost_table=path,
                                isolate=False)
    info = converters.describe_tflite(flat)
    assert info.quantization == "float32" and set(_modes(info).values()) == {"float32"}
    verification = converters.verify(cnn_lstm, flat, x[:64])
    assert verification.criterion.startswith("max |diff| <= 0.0001") and verification.passed


def test_the_shipped_table_is_measured_data_for_every_kind():
    table = load_cost_table()
    assert set(table["costs"]) == {"ai-edge-litert", "tflite-runtime-2.14"}
    for kinds in table["costs"].values():
        assert set(kinds) == {"lstm", "dense", "conv", "conv1x1", "depthwise"}
    assert json.loads(DEFAULT_COST_TABLE.read_text())["made_by"].startswith("python benchmarks/cost_table.py")


@pytest.fixture
def no_conversion(monkeypatch):
    monkeypatch.setattr(tflite_module, "_convert", lambda *a, **k: pytest.fail("conversion started"))


@pytest.mark.parametrize("cost_table, match", [
    ({"rows": []}, "`cost_table` has no 'costs' mapping"),
    ({"costs": {"ai-edge-litert": {"lstm": [{"macs": 10, "float32": -1, "int8": 2}]}}},
     r"`cost_table` costs\['ai-edge-litert'\]\['lstm'\] has a row without positive"),
    ({"costs": {"ai-edge-litert": {"gru": [{"macs": 10, "float32": 1, "int8": 2}]}}}, "unknown kind 'gru'"),
    ({"costs": {"tflite-runtime-2.14": {"lstm": [{"macs": 10, "float32": 1, "int8": 2}]}}},
     "`cost_table` has no costs for runtime='ai-edge-litert'"),
    ("/nonexistent/table.json", "`cost_table` could not be read as JSON"),
    (3, "`cost_table` must be None, a path or a dict; received 3"),
])
def test_a_bad_cost_table_is_refused_before_converting(cnn_lstm, data, no_conversion, cost_table, match):
    with pytest.raises(ValueError, match=match):
        converters.to_tflite(cnn_lstm, quantization="auto", representative_data=data[0][:8], cost_table=cost_table)


@pytest.mark.parametrize("kwargs, match", [
    ({"quantization": "mixed"}, r"`quantization` must be one of .*'int8', 'auto'; received 'mixed'"),
    ({"quantization": "auto"}, "quantization='auto' needs `representative_data`"),
    ({"quantization": "auto", "int8_io": True, "representative_data": np.zeros((8, *IMAGE))},
     "`int8_io=True` needs quantization='int8'"),
    ({"standardize": (np.zeros(16), np.zeros(16))}, "`standardize` std must be > 0"),
    ({"standardize": (np.zeros(5), np.ones(5))}, r"`standardize` mean of shape \(5,\) does not broadcast"),
    ({"standardize": {"mean": 0.0}}, "`standardize` must be None, a \\(mean, std\\) pair"),
])
def test_bad_arguments_are_refused_before_converting(cnn_lstm, no_conversion, kwargs, match):
    with pytest.raises(ValueError, match=match):
        converters.to_tflite(cnn_lstm, **kwargs)


def test_the_file_standardises_raw_inputs_itself():
    """Raw sensor values in, the Keras model's output on the standardised values out."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((STEPS, FEATURES)), keras.layers.LSTM(4), keras.layers.Dense(3)])
    rng = np.random.default_rng(1)
    standard = rng.normal(size=(32, STEPS, FEATURES)).astype(np.float32)
    mean = rng.normal(size=FEATURES).astype(np.float32) * 50
    std = rng.uniform(0.1, 20, size=FEATURES).astype(np.float32)
    raw = standard[:32] * std + mean
    flat = converters.to_tflite(model, quantization="float32", standardize={"mean": mean, "std": std, "n": 3},
                                isolate=False)
    got = load_interpreter(flat).predict(raw)
    np.testing.assert_allclose(got, model.predict(standard[:32], verbose=0), atol=1e-4)
    info = converters.describe_tflite(flat)
    assert np.allclose(info.tf_vib["input_standardization"]["std"], std)
    assert "input standardised in the file" in str(info) and {"SUB", "MUL"} <= set(info.ops)
    assert converters.verify(model, flat, raw).passed  # verify feeds Keras the standardised inputs
    # Without the standardisation the same raw values give other outputs: the ops matter.
    plain = load_interpreter(converters.to_tflite(model, quantization="float32", isolate=False)).predict(raw)
    assert np.abs(plain - got).max() > 1e-2


def test_a_layer_sharing_a_float_layers_op_and_weight_shape_is_planned_float():
    """The worker finds a float layer's ops by op type and weight shape, so such a twin stays float too."""
    inputs = keras.Input((100, 16))
    wide = keras.layers.Dense(16, name="per_step")(inputs)  # 100 x 256 MACs: int8 by the table
    pooled = keras.layers.GlobalAveragePooling1D()(wide)
    model = keras.Model(inputs, keras.layers.Dense(16, name="head")(pooled))  # 256 MACs: float32
    table = load_cost_table({"costs": {"ai-edge-litert": {"dense": [{"macs": 256, "float32": 1, "int8": 2},
                                                                    {"macs": 25600, "float32": 2, "int8": 1}]}}})
    plans, floats = planning.auto_plan(model, table, "ai-edge-litert")
    assert [str(p) for p in plans] == [
        "per_step (Dense) -> float32 (cost table: int8/float32 0.50 at 25,600 MACs, but its op and weight "
        "shape are those of a float layer)",
        "head (Dense) -> float32 (cost table: int8/float32 2.00 at 256 MACs)"]
    assert [layer.name for layer in floats] == ["per_step", "head"]


def test_the_convolutions_of_a_cnn_model_inside_time_distributed_are_planned():
    """A CNN model (keras.applications style) per frame: its convolutions are planned like top-level ones."""
    frame = keras.Input(IMAGE)
    h = keras.layers.Conv2D(32, 3, padding="same", name="big")(frame)  # 4.7M MACs a frame: int8 by the table
    h = keras.layers.Conv2D(4, 3, padding="same", name="small")(keras.layers.AveragePooling2D(4)(h))
    cnn = keras.Model(frame, keras.layers.GlobalAveragePooling2D()(h), name="cnn")
    clips = keras.Input((3, *IMAGE))
    h = keras.layers.LSTM(4, name="lstm")(keras.layers.TimeDistributed(cnn, name="frames")(clips))
    model = keras.Model(clips, keras.layers.Dense(3, name="head")(h))
    plans, floats = planning.auto_plan(model, load_cost_table(), "ai-edge-litert")
    modes = {p.name: p.becomes for p in plans}
    assert list(modes) == ["frames/big", "frames/small", "lstm", "head"]
    # each convolution counts once per frame: 3 x 4,718,592 and 3 x 8 x 8 x 288 x 4 MACs
    assert modes["frames/big"].startswith("int8 (cost table: int8/float32 0.86 at 14,155,776 MACs")
    assert modes["frames/small"].startswith("float32 (cost table: int8/float32 1.10 at 221,184 MACs")
    assert [layer.name for layer in floats] == ["small", "lstm", "head"]
    assert [p.kind for p in plans] == ["Conv2D", "Conv2D", "LSTM", "Dense"]


# --- the fallback: verify the file, and step back to a safer plan when it misses ---------------------

#: The reverse of the shipped table for the LSTM: int8 for every kind (the head, the LSTM and the conv).
ALL_INT8 = {"costs": {"ai-edge-litert": {kind: [{"macs": 1000, "float32": 3, "int8": 1}]
                                         for kind in ("lstm", "conv", "dense")}}}


@pytest.fixture
def conversions(monkeypatch):
    """The conversions `to_tflite` starts, one list of job plans per child run."""
    started, convert = [], tflite_module._convert

    def counted(jobs, *args):
        started.append([job.convert_as for job in jobs])
        return convert(jobs, *args)

    monkeypatch.setattr(tflite_module, "_convert", counted)
    return started


def _fallback(info):
    return info.tf_vib["quantization_fallback"]


def test_a_plan_that_misses_verification_falls_back_to_a_float_lstm(cnn_lstm, data, monkeypatch, conversions):
    """A verification that also fails an int8 LSTM (the file's own op dtype decides): the
    second step makes the LSTM float32, keeps the convolution and the head int8, and passes."""
    x, y = data
    real = fallback_module.verify
    checked = []

    def strict(model, flat, x, y=None):
        result = real(model, flat, x, y)
        lstm_int8 = _op_dtype(converters.describe_tflite(flat), "UNIDIRECTIONAL_SEQUENCE_LSTM") == ["int8"]
        checked.append(lstm_int8)
        return dataclasses.replace(result, passed=result.passed and not lstm_int8)

    monkeypatch.setattr(fallback_module, "verify", strict)
    flat = converters.to_tflite(cnn_lstm, quantization="auto", representative_data=x[:64], cost_table=ALL_INT8,
                                verify_data=(x, y), isolate=False)
    assert checked == [True, False] and len(conversions) == 2  # two files, no third step
    info = converters.describe_tflite(flat)
    assert _op_dtype(info, "UNIDIRECTIONAL_SEQUENCE_LSTM") == ["float32"]
    assert _op_dtype(info, "CONV_2D") == ["int8"] and _op_dtype(info, "FULLY_CONNECTED") == ["int8"]
    assert _modes(info) == {"conv": "int8", "lstm": "float32", "head": "int8"}
    record = _fallback(info)
    assert record["used"] == "recurrent layers float32"
    first, second = record["attempts"][:2]
    assert first["plan"] == "cost table" and first["int8"] == ["conv", "head", "lstm"]
    assert first["outcome"] == "abandoned: missed its verification target" and "256 samples" in first["verification"]
    assert second["float32"] == ["lstm"] and second["outcome"] == "used: verified"
    assert len(record["attempts"]) == 2
    text = str(info)
    assert "the file has the 'recurrent layers float32' plan" in text
    assert "lstm (LSTM) -> float32 (cost table: int8/float32 0.33" in text and "fallback 'recurrent'" in text
    assert real(cnn_lstm, flat, x, y).passed


def test_a_plan_that_passes_is_kept_without_a_retry(cnn_lstm, data, conversions):
    x, y = data
    flat = converters.to_tflite(cnn_lstm, quantization="auto", representative_data=x[:64], verify_data=(x, y),
                                isolate=False)
    assert conversions == [["auto"]]
    record = _fallback(converters.describe_tflite(flat))
    assert record["used"] == "cost table" and len(record["attempts"]) == 1
    assert record["attempts"][0]["outcome"] == "used: verified"
    assert "accuracy within 1 point of Keras: passed" in record["attempts"][0]["verification"]


def test_when_every_int8_plan_misses_the_file_is_float32(cnn_lstm, data, monkeypatch, conversions):
    """An int8 target no file can meet (the accuracy must rise by a point): both int8 steps are
    abandoned on the real verification, the float32 file passes its own 1e-4 target."""
    x, y = data
    monkeypatch.setattr(sys.modules["converters.verify"], "INT8_ACCURACY_DROP", -0.01)
    flat = converters.to_tflite(cnn_lstm, quantization="auto", representative_data=x[:64], cost_table=ALL_INT8,
                                verify_data=(x, y), isolate=False)
    assert conversions == [["int8"], ["auto"], ["float32"]]  # no float layer in the first plan: plain int8
    info = converters.describe_tflite(flat)
    assert info.quantization == "float32" and set(_modes(info).values()) == {"float32"}
    record = _fallback(info)
    assert record["used"] == "float32"
    assert [a["outcome"].split(":")[0] for a in record["attempts"]] == ["abandoned", "abandoned", "used"]
    assert "max |diff| <= 0.0001: passed" in record["attempts"][2]["verification"]


def test_when_every_plan_misses_the_last_file_is_returned_with_a_warning(cnn_lstm, data, monkeypatch, conversions):
    x, y = data
    verify_module = sys.modules["converters.verify"]
    monkeypatch.setattr(verify_module, "INT8_ACCURACY_DROP", -0.01)
    monkeypatch.setitem(verify_module.TOLERANCES, "float32", (-1.0, False))  # no file meets these
    with pytest.warns(converters.FallbackWarning, match="every plan missed its verification target"):
        flat = converters.to_tflite(cnn_lstm, quantization="auto", representative_data=x[:64],
                                    cost_table=ALL_INT8, verify_data=(x, y), isolate=False)
    assert len(conversions) == 3  # and no more: the steps end
    record = _fallback(converters.describe_tflite(flat))
    assert record["used"] == "float32" and converters.describe_tflite(flat).quantization == "float32"
    assert record["attempts"][2]["outcome"].startswith("used although it missed its verification target")


def test_too_few_samples_decide_nothing_and_a_crash_is_a_failed_step(cnn_lstm, data, monkeypatch, conversions):
    """64 calibration samples (the default check): no verification decides. The first child
    crashes (SIGSEGV): this process lives on and the next step that differs is converted."""
    x, _ = data
    convert, crashed = tflite_module._convert, []

    def crash_once(jobs, representative, isolate, timeout):
        if crashed:  # later steps in this process: one child start less
            return convert(jobs, representative, False, timeout)
        crashed.append(True)
        monkeypatch.setenv("TF_VIB_CONVERTER_FAULT", "convert")
        try:
            return convert(jobs, representative, isolate, timeout)
        finally:
            monkeypatch.delenv("TF_VIB_CONVERTER_FAULT")

    monkeypatch.setattr(tflite_module, "_convert", crash_once)
    flat = converters.to_tflite(cnn_lstm, quantization="auto", representative_data=x[:64])
    record = _fallback(converters.describe_tflite(flat))
    first, second, third = record["attempts"]
    assert first["outcome"].startswith("abandoned: ConversionCrash: TFLite crashed (SIGSEGV)")
    assert second["outcome"] == "skipped: the same plan as an earlier step"  # the shipped plan's LSTM is float
    assert third["outcome"].startswith("used, not verified: 64 calibration samples, fewer than the 200")
    assert record["used"] == "float32" and converters.describe_tflite(flat).quantization == "float32"


@pytest.mark.parametrize("verify_data, match", [
    ((np.zeros((300, *IMAGE)), np.zeros(300), None), r"`verify_data` must be inputs x or a pair \(x, y\)"),
    ((np.zeros((300, 4, 4)), np.zeros(300)), "`verify_data`"),
    ((np.zeros((300, *IMAGE), np.float32), np.zeros(299)), "`verify_data` holds 300 samples but 299 labels"),
])
def test_bad_verify_data_is_refused_before_converting(cnn_lstm, no_conversion, verify_data, match):
    with pytest.raises(ValueError, match=match):
        converters.to_tflite(cnn_lstm, quantization="auto", representative_data=np.zeros((8, *IMAGE), np.float32),
                             verify_data=verify_data)


def test_verify_data_without_auto_is_refused(cnn_lstm, no_conversion):
    with pytest.raises(ValueError, match="`verify_data` is for quantization='auto'"):
        converters.to_tflite(cnn_lstm, quantization="int8", representative_data=np.zeros((8, *IMAGE), np.float32),
                             verify_data=np.zeros((8, *IMAGE), np.float32))


def test_verify_data_without_the_fallback_is_refused(cnn_lstm, no_conversion):
    with pytest.raises(ValueError, match="`verify_data` is what the fallback decides on.*received fallback=False"):
        converters.to_tflite(cnn_lstm, quantization="auto", representative_data=np.zeros((8, *IMAGE), np.float32),
                             verify_data=np.zeros((8, *IMAGE), np.float32), fallback=False)


def test_a_kind_without_cost_table_rows_is_planned_float32_and_stays_float(data):
    """A DepthwiseConv2D with a table that has no depthwise rows: planned float32 (the table
    cannot say int8 pays), matched in the file by its op and weight shape, and kept float."""
    x, _ = data
    keras.utils.set_random_seed(0)
    inputs = keras.Input(IMAGE)
    h = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(inputs)
    h = keras.layers.Conv2D(8, 3, padding="same", name="conv")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)  # a kind no table has: listed as not planned
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(h)))
    table = {"costs": {"ai-edge-litert": {kind: [{"macs": 1000, "float32": 3, "int8": 1}] for kind in ("conv", "dense")}}}
    flat = converters.to_tflite(model, quantization="auto", representative_data=x[:64], cost_table=table,
                                isolate=False)
    info = converters.describe_tflite(flat)
    assert _modes(info) == {"depthwise": "float32", "conv": "int8", "head": "int8"}
    assert "depthwise (DepthwiseConv2D) -> float32 (cost table: no rows for kind 'depthwise')" in str(info)
    assert _op_dtype(info, "DEPTHWISE_CONV_2D") == ["float32"] and _op_dtype(info, "CONV_2D") == ["int8"]
    assert info.tf_vib["unplanned_layers"] == [{"layer": "bn", "kind": "BatchNormalization",
                                                "mode": "int8 where the quantizer can"}]
    assert "not in the plan (no cost-table kind): bn (BatchNormalization) -> int8 where the quantizer can" in str(info)
    # the shipped table has depthwise rows: slower in int8 on ai-edge-litert at every measured size
    plans, _ = planning.auto_plan(model, load_cost_table(), "ai-edge-litert")
    assert plans[0].becomes.startswith("float32 (cost table: int8/float32 1.1")
