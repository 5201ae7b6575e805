"""A repair of the state variables TFLite's converter shares between a recurrent op and others.

A fused ``UNIDIRECTIONAL_SEQUENCE_LSTM`` keeps its output state and cell state in *variable*
tensors (inputs 18 and 19): it reads them as the initial state and writes its final state back.
The converter builds them from zero constants, and its constant folding merges equal constants
first: the zeros of a later GRU's or SimpleRNN's initial state (the ``WHILE`` loop's, or the
first step of an unrolled one), or of another fused LSTM of the same width, can become the
*same* tensor. The later layer then starts from the LSTM's final state instead of zeros, and
its first step is wrong (TF 2.21; measured in docs/deployment.md).

`untie_state_variables` gives each recurrent op that writes a variable its own, and every
other reader a constant holding the variable's initial value (its data, or what
``reset_all_variables`` writes: zeros, the zero point for int8), which is what the Keras
graph meant.
"""

import numpy as np

__all__ = ["untie_state_variables"]

#: Ops that write their variable inputs (their state) when they run.
_WRITES_STATE = {"UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN",
                 "BIDIRECTIONAL_SEQUENCE_RNN", "SVDF", "LSTM"}
#: TFLite TensorType codes -> NumPy dtypes, for the variables' initial values.
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8}


def untie_state_variables(flat):
    """``(flat, repairs)``: the file with every shared state variable untied (see above), and a
    line per repair (empty, and the same bytes, when no variable is shared)."""
    from tensorflow.lite.python import schema_py_generated as schema

    from converters._flatbuffer import op_kinds, packed

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flat, 0))
    repairs = []
    for graph in model.subgraphs:
        kinds = op_kinds(model, graph)
        readers = {}  # variable tensor index -> [(op index, input position)]
        for index, op in enumerate(graph.operators):
            for position, tensor in enumerate(op.inputs):
                if tensor >= 0 and graph.tensors[tensor].isVariable:
                    readers.setdefault(int(tensor), []).append((index, position))
        for tensor, uses in readers.items():
            writers = [use for use in uses if kinds[use[0]] in _WRITES_STATE]
            others = [use for use in uses if kinds[use[0]] not in _WRITES_STATE]
            if not writers or (len(writers) == 1 and not others):
                continue
            name = graph.tensors[tensor].name.decode()
            for index, _ in uses:  # the object API's arrays are read-only views of the file
                graph.operators[index].inputs = np.array(graph.operators[index].inputs, np.int32)
            for index, position in writers[1:]:
                graph.operators[index].inputs[position] = _copy(model, graph, tensor, variable=True, schema=schema)
            if others:
                constant = _copy(model, graph, tensor, variable=False, schema=schema)
                for index, position in others:
                    graph.operators[index].inputs[position] = constant
            readers_text = ", ".join(f"{kinds[i]} (op {i})" for i, _ in writers[1:] + others)
            repairs.append(f"state variable {name!r} of {kinds[writers[0][0]]} (op {writers[0][0]}) was also "
                           f"read by {readers_text}: given its own copy")
    return (packed(model), repairs) if repairs else (flat, [])


def _copy(model, graph, tensor, *, variable, schema):
    """A new tensor like ``graph.tensors[tensor]``: a variable of its own (``variable``), or a
    constant holding its initial value; returns its index."""
    import copy

    original = graph.tensors[tensor]
    new = copy.deepcopy(original)
    new.name = original.name + (b"_state" if variable else b"_initial")
    new.isVariable = variable
    data = model.buffers[original.buffer].data if original.buffer < len(model.buffers) else None
    if variable and (data is None or len(data) == 0):
        new.buffer = 0  # an empty buffer: reset_all_variables fills it
    else:
        if data is None or len(data) == 0:
            points = getattr(original.quantization, "zeroPoint", None)
            zero = int(points[0]) if original.type == 9 and points is not None and len(points) else 0  # int8
            data = np.full(tuple(int(d) for d in original.shape), zero, _DTYPES[original.type]).tobytes()
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(bytes(data), np.uint8).copy()
        model.buffers.append(buffer)
        new.buffer = len(model.buffers) - 1
    graph.tensors.append(new)
    return len(graph.tensors) - 1
