"""Repairs of the quantization parameters TFLite's int8 conversion gets wrong for a fused LSTM.

TFLite's full-integer ``UNIDIRECTIONAL_SEQUENCE_LSTM`` (the 8x8->16 kernel, no projection,
no layer normalization) relies on three facts that its quantizer does not enforce:

1. **The cell state's scale is between 2^-15 and 2^-9.** The kernel computes ``tanh(c)``
   with ``ApplyTanh(15 + log2(cell scale))``, whose fixed-point dispatch covers 0 to 6
   integer bits and silently *returns without writing* otherwise: with a cell scale of 2^-16
   (chosen when the calibrated cell state stays within +-0.5, common in small or untrained
   layers) the hidden state is computed from whatever the scratch buffer held. 2^-15 costs
   one bit of the cell's 16; 2^-9 (a calibrated |c| over 64) clips the cell at +-64, where
   tanh is 1 to float precision.
2. **The hidden state, the output-state variable and the output share one scale and zero
   point.** The kernel quantizes ``o * tanh(c)`` with the parameters of its fifth
   intermediate tensor (``effective_hidden_scale_intermediate``) and copies those bytes into
   the output-state variable (read back as the recurrent input at the next step) and into
   the output. The quantizer gives the three their own calibrated parameters, and a
   CONCATENATION after the LSTM (Bidirectional, two branches) imposes its own on the output,
   so the bytes are read in the wrong scale. The intermediate and the state take the
   output's parameters (its range covers the hidden state's: it was calibrated on it, or on
   a concatenation that holds it).
3. **REVERSE_V2 (``go_backwards``) copies bytes**: its int8 kernel does not requantize, but
   the quantizer calibrates its output apart from its input (they differ when a feature
   selection or a slice precedes it). When the layers reading it take it as their input, the
   output takes the input's parameters and their int32 biases, stored in units of input scale
   x weight scale, are requantized; when it feeds an op that fixes its scale (the
   CONCATENATION or ADD of a Bidirectional's backward sequence) and reverses an LSTM's output,
   that output takes the reverse's parameters (and, by 2, the LSTM's state and hidden state).

Each repair leaves the file's arithmetic what the quantizer meant it to be; what they change
on the test zoo's models is measured in docs/deployment.md.
"""

import numpy as np

from converters._flatbuffer import op_kinds, packed

__all__ = ["repair_int8_lstm"]

#: The cell-state scales the integer tanh handles: 0 to 6 integer bits (2^-15 to 2^-9).
MIN_CELL_SCALE, MAX_CELL_SCALE = 2.0 ** -15, 2.0 ** -9
#: UNIDIRECTIONAL_SEQUENCE_LSTM's inputs: 0 the input, 1-4 the input weights (i, f, c, o),
#: 12-15 the gate biases, 16 the projection weights, 18 the output state, 19 the cell state,
#: 20-23 the layer-normalization weights.
_LSTM_WEIGHTS, _LSTM_BIASES, _PROJECTION, _STATE, _CELL = (1, 2, 3, 4), (12, 13, 14, 15), 16, 18, 19
_LAYER_NORM = (20, 21, 22, 23)
#: Ops whose int32 bias (input index) is kept in units of input scale x weight scale (input 1).
_BIAS_OF = {"FULLY_CONNECTED": 2, "CONV_2D": 2, "DEPTHWISE_CONV_2D": 2}


def repair_int8_lstm(flat):
    """``(flat, repairs)``: the file with the three repairs above applied, and a line per repair
    (empty, and the same bytes, when nothing needed one)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flat, 0))
    repairs = []
    for graph in model.subgraphs:
        kinds = op_kinds(model, graph)
        # the reverses first: one may set the output parameters of the LSTM before it
        for op, kind in zip(graph.operators, kinds, strict=True):
            if kind == "REVERSE_V2":
                repairs += _tie_reverse(model, graph, op, kinds, schema)
        for op, kind in zip(graph.operators, kinds, strict=True):
            if kind == "UNIDIRECTIONAL_SEQUENCE_LSTM":
                repairs += _repair_lstm(graph, op, schema)
    return (packed(model), repairs) if repairs else (flat, [])


def _params(tensor):
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    return np.asarray(q.scale, np.float64), np.asarray(q.zeroPoint, np.int64)


def _same(a, b):
    return np.allclose(a[0], b[0], rtol=1e-6) and np.array_equal(a[1], b[1])


def _set(tensor, scale, zero_point):
    tensor.quantization.scale = np.asarray(scale, np.float32)
    tensor.quantization.zeroPoint = np.asarray(zero_point, np.int64)


def _name(tensor):
    return (tensor.name or b"").decode(errors="replace").split(";")[0][:48]


def _readers(graph, index, kinds):
    return [(op, kind) for op, kind in zip(graph.operators, kinds, strict=True) if index in op.inputs.tolist()]


def _repairable_lstm(graph, op, schema):
    """The kernel these repairs are about: int8 output, no projection, no layer normalization."""
    inputs = op.inputs.tolist()
    return (graph.tensors[op.outputs[0]].type == schema.TensorType.INT8 and inputs[_PROJECTION] < 0
            and all(inputs[i] < 0 for i in _LAYER_NORM if i < len(inputs))
            and op.intermediates is not None and len(op.intermediates) == 5)


def _repair_lstm(graph, op, schema):
    if not _repairable_lstm(graph, op, schema):
        return []
    inputs = op.inputs.tolist()
    output = graph.tensors[op.outputs[0]]
    repairs = []
    cell = graph.tensors[inputs[_CELL]]
    cell_params = _params(cell)
    if cell_params is not None and not MIN_CELL_SCALE <= cell_params[0][0] <= MAX_CELL_SCALE:
        scale = MIN_CELL_SCALE if cell_params[0][0] < MIN_CELL_SCALE else MAX_CELL_SCALE
        _set(cell, [scale], [0])
        repairs.append(f"LSTM {_name(output)}: cell-state scale 2^{np.log2(cell_params[0][0]):.0f} -> "
                       f"2^{np.log2(scale):.0f} (the integer tanh skips scales outside 2^-15..2^-9)")
    wanted = _params(output)
    for index, what in ((op.intermediates[4], "hidden state"), (inputs[_STATE], "output state")):
        tensor = graph.tensors[index]
        have = _params(tensor)
        if wanted is not None and have is not None and not _same(have, wanted):
            _set(tensor, wanted[0], wanted[1])
            repairs.append(f"LSTM {_name(output)}: {what} scale {have[0][0]:.3g}/zp {have[1][0]} -> the "
                           f"output's {wanted[0][0]:.3g}/zp {wanted[1][0]}")
    return repairs


def _tie_reverse(model, graph, op, kinds, schema):
    """REVERSE_V2's input and output in one scale: the output takes the input's when every
    reader takes it as its input only (and its int32 bias is requantized); else, when the
    input is a repairable LSTM's output read by this op alone (a Bidirectional's backward
    sequence before a CONCATENATION or ADD, which fix the output's scale), that LSTM's output
    takes the reverse's. Otherwise the file is left as it is, and the line says so."""
    source, target = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    have, wanted = _params(target), _params(source)
    if target.type != schema.TensorType.INT8 or have is None or wanted is None or _same(have, wanted):
        return []
    biases = []
    for reader, kind in _readers(graph, op.outputs[0], kinds):
        only_input = reader.inputs[0] == op.outputs[0] and op.outputs[0] not in reader.inputs.tolist()[1:]
        if kind == "UNIDIRECTIONAL_SEQUENCE_LSTM" and only_input and _repairable_lstm(graph, reader, schema):
            pairs = list(zip(_LSTM_WEIGHTS, _LSTM_BIASES, strict=True))
        elif kind in _BIAS_OF and only_input:
            pairs = [(1, _BIAS_OF[kind])]
        else:
            return _retie_producer(graph, op, kinds, schema, source, target, have, wanted)
        for weight_at, bias_at in pairs:
            if reader.inputs[weight_at] < 0 and reader.inputs[bias_at] < 0:
                continue  # a gate the layer does not have (CIFG)
            if not _known_bias(model, graph, reader, weight_at, bias_at, schema):
                return _retie_producer(graph, op, kinds, schema, source, target, have, wanted)
            biases.append((reader, bias_at, weight_at))
    ratio = have[0][0] / wanted[0][0]
    for reader, bias_at, weight_at in biases:
        _requantize_bias(model, graph, reader, bias_at, weight_at, ratio, wanted[0][0], schema)
    _set(target, wanted[0], wanted[1])
    return [f"REVERSE_V2 {_name(target)}: output scale {have[0][0]:.3g}/zp {have[1][0]} -> its input's "
            f"{wanted[0][0]:.3g}/zp {wanted[1][0]} ({len(biases)} bias(es) of its readers requantized)"]


def _known_bias(model, graph, reader, weight_at, bias_at, schema):
    """Whether ``reader``'s bias is a constant int32 tensor in units of input x weight scale."""
    if reader.inputs[weight_at] < 0 or reader.inputs[bias_at] < 0:
        return False
    bias, weight = graph.tensors[reader.inputs[bias_at]], graph.tensors[reader.inputs[weight_at]]
    return (bias.type == schema.TensorType.INT32 and model.buffers[bias.buffer].data is not None
            and _params(weight) is not None)


def _retie_producer(graph, op, kinds, schema, source, target, have, wanted):
    producers = [other for other in graph.operators if op.inputs[0] in other.outputs.tolist()]
    if len(producers) == 1 and _repairable_lstm(graph, producers[0], schema) \
            and len(_readers(graph, op.inputs[0], kinds)) == 1 and op.inputs[0] not in graph.outputs.tolist():
        _set(source, have[0], have[1])  # the LSTM's repair then gives its state and hidden state these
        return [f"REVERSE_V2 {_name(target)}: the LSTM output it reverses, scale {wanted[0][0]:.3g}/zp "
                f"{wanted[1][0]} -> the reverse's {have[0][0]:.3g}/zp {have[1][0]}"]
    return [f"REVERSE_V2 {_name(target)}: not repaired (output {have[0][0]:.3g}/zp {have[1][0]}, input "
            f"{wanted[0][0]:.3g}/zp {wanted[1][0]}; neither side can be retuned here): check the file "
            "with converters.verify"]


def _requantize_bias(model, graph, reader, bias_at, weight_at, ratio, input_scale, schema):
    """``reader``'s int32 bias for an input scale ``ratio`` times smaller, in a tensor and buffer
    of its own (the converter shares equal constants between ops)."""
    bias = graph.tensors[reader.inputs[bias_at]]
    weight_scale = _params(graph.tensors[reader.inputs[weight_at]])[0]
    values = np.frombuffer(bytes(model.buffers[bias.buffer].data), np.int32)
    copy = schema.TensorT()
    copy.shape, copy.type, copy.name = bias.shape, bias.type, bias.name
    copy.quantization = schema.QuantizationParametersT()
    _set(copy, weight_scale * input_scale, np.zeros(len(weight_scale), np.int64))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(np.clip(np.round(values * ratio), -2 ** 31, 2 ** 31 - 1).astype(np.int32).tobytes(),
                                np.uint8)
    model.buffers.append(buffer)
    copy.buffer = len(model.buffers) - 1
    graph.tensors.append(copy)
    inputs = np.array(reader.inputs, np.int32)
    inputs[bias_at] = len(graph.tensors) - 1
    reader.inputs = inputs
