"""A ``.tflite`` file's flatbuffer: each operator's builtin name, and the object tree packed
back into bytes. Shared by the child's rewrites (`converters._worker`) and the int8 LSTM
repair (`converters._int8_repair`), which each read and rewrite the file's ``schema.ModelT``."""

__all__ = ["op_kinds", "packed"]


def op_kinds(model, graph):
    """The builtin op name (``"UNIDIRECTIONAL_SEQUENCE_LSTM"``, ...) of each of ``graph``'s
    operators, in order (``model``: the file's ``schema.ModelT``)."""
    from tensorflow.lite.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [model.operatorCodes[op.opcodeIndex] for op in graph.operators]
    return [names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) for code in codes]


def packed(model):
    """The file's bytes for the object tree ``model`` (a ``schema.ModelT``)."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
