"""The int8 fused LSTM's quantization parameters, corrected after the converter (converters/_int8_repair.py).

The case is the zoo's Bidirectional model with a feature removed and units pruned: before the
repairs its int8 file agreed with Keras on 17.6% of samples (the backward LSTM's cell scale
was 2^-16, its hidden state had three different scales, and the REVERSE_V2 before it copied
bytes between two scales). Every repair is checked on the file itself, and the file on Keras.
"""

import numpy as np
import pytest
from helpers import prune_partly
from model_zoo import BUILDERS

import converters
import tf_vib
from converters._flatbuffer import op_kinds, packed
from converters._int8_repair import MAX_CELL_SCALE, MIN_CELL_SCALE, repair_int8_lstm
from tf_vib._keras import keras
from tf_vib.compress._defaults import STATE_GATES


@pytest.fixture(scope="module")
def converted():
    keras.utils.set_random_seed(0)
    case = BUILDERS["bilstm_concat"]()
    vib = tf_vib.add_vib_masks(case.model, masked_gates=STATE_GATES)
    prune_partly(vib, np.random.default_rng(0))
    small = tf_vib.strip_masks(vib)
    files = converters.to_tflite_many(small, ["float32", "int8"], representative_data=case.data(64, seed=2)[0])
    return case, small, files


def _ops(flat):
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flat, 0))
    graph = model.subgraphs[0]
    for kind, op in zip(op_kinds(model, graph), graph.operators, strict=True):
        yield kind, op, graph


def _params(tensor):
    return float(tensor.quantization.scale[0]), int(tensor.quantization.zeroPoint[0])


def test_the_int8_file_holds_consistent_lstm_parameters(converted):
    _, _, files = converted
    lstms = reverses = 0
    for kind, op, graph in _ops(files["int8"]):
        if kind == "UNIDIRECTIONAL_SEQUENCE_LSTM":
            lstms += 1
            output = _params(graph.tensors[op.outputs[0]])
            assert _params(graph.tensors[op.intermediates[4]]) == output  # the hidden state's
            assert _params(graph.tensors[op.inputs[18]]) == output  # the output state's
            assert MIN_CELL_SCALE <= graph.tensors[op.inputs[19]].quantization.scale[0] <= MAX_CELL_SCALE
        elif kind == "REVERSE_V2":
            reverses += 1
            assert _params(graph.tensors[op.outputs[0]]) == _params(graph.tensors[op.inputs[0]])
    assert (lstms, reverses) == (2, 1)


def test_the_repairs_are_recorded_in_the_file_and_it_agrees_with_keras(converted):
    case, small, files = converted
    description = converters.describe_tflite(files["int8"])
    repairs = description.tf_vib["int8_repairs"]
    assert any("cell-state scale 2^-16 -> 2^-15" in line for line in repairs), repairs
    assert any(line.startswith("REVERSE_V2") and "4 bias(es) of its readers requantized" in line
               for line in repairs), repairs
    assert sum("hidden state scale" in line for line in repairs) == 2, repairs
    assert "int8 LSTM parameters corrected after conversion" in str(description)
    x, _ = case.data(96, seed=3)
    result = converters.verify(small, files["int8"], x, quantization="int8")
    # before the repairs: max 0.668, same class on 17.6% (the zoo judges int8 on the samples
    # whose class is clear, and passes; here all 96 count, near-ties included)
    assert result.max_abs_diff < 0.1 and result.argmax_agreement >= 0.95, str(result)


def test_a_float_file_and_a_repaired_file_are_left_as_they_are(converted):
    _, _, files = converted
    assert repair_int8_lstm(files["float32"]) == (files["float32"], [])
    # the file the converter returned is already repaired: a second pass changes nothing
    assert repair_int8_lstm(files["int8"]) == (files["int8"], [])


def _with_cell_scale(flat, scale):
    """The file with every int8 LSTM's cell-state scale set to ``scale``."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flat, 0))
    graph = model.subgraphs[0]
    for kind, op in zip(op_kinds(model, graph), graph.operators, strict=True):
        if kind == "UNIDIRECTIONAL_SEQUENCE_LSTM":
            graph.tensors[op.inputs[19]].quantization.scale = np.array([scale], np.float32)
    return packed(model)


@pytest.mark.parametrize("scale, fixed", [(2.0 ** -17, MIN_CELL_SCALE), (2.0 ** -8, MAX_CELL_SCALE)])
def test_a_cell_scale_outside_what_the_integer_tanh_handles_is_brought_inside(converted, scale, fixed):
    _, _, files = converted
    repaired, repairs = repair_int8_lstm(_with_cell_scale(files["int8"], scale))
    cells = [graph.tensors[op.inputs[19]].quantization.scale[0]
             for kind, op, graph in _ops(repaired) if kind == "UNIDIRECTIONAL_SEQUENCE_LSTM"]
    assert cells == [np.float32(fixed)] * 2
    assert sum(f"cell-state scale 2^{np.log2(scale):.0f} -> 2^{np.log2(fixed):.0f}" in line for line in repairs) == 2
