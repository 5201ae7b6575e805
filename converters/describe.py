"""What a ``.tflite`` file holds: ops and their versions, tensors, quantization, runtimes.

Read straight from the flatbuffer (TFLite's own schema), without running the file.
"""

import dataclasses
import json

import numpy as np

from converters._tflite214_ops import (
    TFLITE_RUNTIME_2_14_MAX_VERSIONS,
    TFLITE_RUNTIME_2_14_MIN_VERSIONS_NOT_1,
)

__all__ = ["TFLiteInfo", "TensorInfo", "describe_tflite", "RUNTIME_TARGETS"]

#: Runtimes a file can be checked against: the maintained one, and the last tflite-runtime.
RUNTIME_TARGETS = ("ai-edge-litert", "tflite-runtime-2.14")

_DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16",
           9: "int8", 10: "float64"}


def _schema():
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


@dataclasses.dataclass
class TensorInfo:
    name: str
    shape: tuple
    dtype: str
    scale: float | None = None
    zero_point: int | None = None


@dataclasses.dataclass
class TFLiteInfo:
    """A summary of one ``.tflite`` file.

    Attributes:
      size_bytes: the file size.
      ops: every operator of every subgraph, in order, as ``"NAME"`` (subgraph 0 first).
      op_versions: ``{name: highest version used}``.
      inputs, outputs: `TensorInfo` of the main subgraph's inputs and outputs.
      weight_bytes: bytes of constant data (weights, biases, quantization tables).
      quantization: what the file holds: ``float32``, ``dynamic`` (int8 weights, float
        activations), ``float16`` (float16 weights) or ``int8`` (int8 activations).
      min_runtime_version: the converter's own note of the oldest TFLite runtime that can
        run the file (from its op versions), or None.
      subgraphs: number of subgraphs (a WHILE loop adds two).
      op_input_dtypes: the dtype of each op's first input, in `ops` order: which ops
        run in int8 (``int8``) and which in float (``float32``).
      tf_vib: what tf-vib's converter noted in the file's ``tf_vib`` metadata, or None:
        ``quantization_plan`` (``quantization="auto"``: one ``{"layer", "kind", "mode",
        "why"}`` per planned layer), ``unplanned_layers`` (the layers with weights of kinds
        no cost table has, ``{"layer", "kind", "mode"}``), ``quantization_fallback`` (``"auto"``'s
        steps: ``used``, the plan the file has, and ``attempts``, each with its ``plan``,
        ``int8`` and ``float32`` layers, ``file`` mode, ``outcome`` and ``verification``, and
        ``min_samples``; see `converters._fallback`), ``input_standardization``
        (``{"mean", "std"}``: the file standardises its raw input itself), ``batch_normalization``
        (one ``{"layer", "folded_into", "why"}`` per BatchNormalization: the layer whose kernel
        and bias it was folded into, or None where it stayed, see `converters.plan.batchnorm`),
        ``int8_repairs`` (a line per quantization parameter of a fused int8 LSTM that tf-vib corrected after
        the converter, see ``converters/_int8_repair.py``) and ``state_repairs`` (a line per
        state variable of a recurrent op that the converter had shared with another op and
        tf-vib untied, see ``converters/_state_repair.py``).
    """

    size_bytes: int
    ops: list
    op_versions: dict
    inputs: list
    outputs: list
    weight_bytes: int
    quantization: str
    min_runtime_version: str | None
    subgraphs: int
    op_input_dtypes: list = dataclasses.field(default_factory=list)
    tf_vib: dict | None = None

    @property
    def op_counts(self):
        counts = {}
        for name in self.ops:
            counts[name] = counts.get(name, 0) + 1
        return counts

    def runtime_support(self):
        """``{runtime: None if the file loads there, else the reason it does not}``."""
        too_new = []
        for name, version in sorted(self.op_versions.items()):
            highest = TFLITE_RUNTIME_2_14_MAX_VERSIONS.get(name)
            lowest = TFLITE_RUNTIME_2_14_MIN_VERSIONS_NOT_1.get(name, 1)
            if highest is None:
                too_new.append(f"{name} (not in 2.14)")
            elif not lowest <= version <= highest:
                too_new.append(f"{name} version {version} (2.14 has {lowest}..{highest})")
        reason = None
        if too_new:
            reason = "tflite-runtime 2.14 lacks " + ", ".join(too_new)
        return {"ai-edge-litert": None, "tflite-runtime-2.14": reason}

    def summary(self):
        """Lines for people: size, quantization, op counts, inputs, runtimes."""
        ops = ", ".join(
            f"{name}{'' if count == 1 else f' x{count}'} (v{self.op_versions[name]})"
            for name, count in sorted(self.op_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        io = lambda tensors: ", ".join(f"{t.dtype}{list(t.shape)}" for t in tensors)  # noqa: E731
        lines = [
            f"size: {self.size_bytes:,} bytes ({self.weight_bytes:,} of constant data), "
            f"quantization: {self.quantization}",
            f"ops ({len(self.ops)} in {self.subgraphs} subgraph{'s' if self.subgraphs > 1 else ''}): {ops}",
            f"input: {io(self.inputs)}  output: {io(self.outputs)}",
        ]
        for runtime, reason in self.runtime_support().items():
            lines.append(f"{runtime}: {'loads' if reason is None else 'cannot load: ' + reason}")
        if self.min_runtime_version:
            lines.append(f"converter's min_runtime_version: {self.min_runtime_version}")
        notes = self.tf_vib or {}
        if "quantization_plan" in notes:
            lines.append("quantization plan (auto): " + "; ".join(
                f"{p['layer']} ({p['kind']}) -> {p['why']}" for p in notes["quantization_plan"]))
        if "unplanned_layers" in notes:
            entries = notes["unplanned_layers"]
            lines.append("not in the plan (no cost-table kind): " + ", ".join(
                f"{e['layer']} ({e['kind']})" for e in entries) + f" -> {entries[0]['mode']}")
        if "quantization_fallback" in notes:
            record = notes["quantization_fallback"]
            lines.append(f"quantization fallback (auto): the file has the {record['used']!r} plan")
            lines += [f"  {i}. {a['plan']!r} (int8: {', '.join(a['int8']) or 'none'}): {a['outcome']}"
                      + (f" [{a['verification']}]" if "verification" in a else "")
                      for i, a in enumerate(record["attempts"], 1)]
        if "input_standardization" in notes:
            s = notes["input_standardization"]
            lines.append(f"input standardised in the file: (x - mean) / std, mean {s['mean']}, std {s['std']}")
        if "batch_normalization" in notes:
            entries = notes["batch_normalization"]
            folded = [f"{e['layer']} -> {e['folded_into']}" for e in entries if e["folded_into"]]
            kept = [f"{e['layer']} {e['why']}" for e in entries if not e["folded_into"]]
            lines.append("BatchNormalization folded into the layer reading it: " + (", ".join(folded) or "none")
                         + ("; kept: " + ", ".join(kept) if kept else ""))
        if "int8_repairs" in notes:
            lines.append("int8 LSTM parameters corrected after conversion: " + "; ".join(notes["int8_repairs"]))
        if "state_repairs" in notes:
            lines.append("shared state variables untied after conversion: " + "; ".join(notes["state_repairs"]))
        return lines

    def __str__(self):
        return "\n".join(self.summary())


def _tensor_info(tensor):
    quantization = tensor.Quantization()
    scale = zero_point = None
    if quantization is not None and quantization.ScaleLength():
        scale = float(quantization.Scale(0))
        zero_point = int(quantization.ZeroPoint(0)) if quantization.ZeroPointLength() else 0
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    name = tensor.Name().decode("utf-8", "replace") if tensor.Name() else ""
    return TensorInfo(name, shape, _DTYPES.get(tensor.Type(), str(tensor.Type())), scale, zero_point)


def describe_tflite(flat):
    """A `TFLiteInfo` for the bytes (or the path) of a ``.tflite`` file."""
    if not isinstance(flat, (bytes, bytearray)):
        with open(flat, "rb") as handle:
            flat = handle.read()
    schema = _schema()
    try:
        model = schema.Model.GetRootAsModel(flat, 0)
        n_codes = model.OperatorCodesLength()
    except Exception as error:
        raise ValueError(f"not a TFLite flatbuffer ({type(error).__name__}: {error})") from error
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(n_codes):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            name = f"CUSTOM:{code.CustomCode().decode()}"
        codes.append((name, code.Version()))
    ops, op_dtypes, versions, constants, dtypes_const, dtypes_variable = [], [], {}, 0, set(), set()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            operator = subgraph.Operators(o)
            name, version = codes[operator.OpcodeIndex()]
            ops.append(name)
            first = operator.Inputs(0) if operator.InputsLength() else -1
            op_dtypes.append(_DTYPES.get(subgraph.Tensors(first).Type(), "other") if first >= 0 else None)
            versions[name] = max(version, versions.get(name, 0))
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            buffer = model.Buffers(tensor.Buffer()) if tensor.Buffer() < model.BuffersLength() else None
            dtype = _DTYPES.get(tensor.Type(), "other")
            has_data = buffer is not None and (buffer.DataLength() > 0 or buffer.Size() > 0)
            (dtypes_const if has_data else dtypes_variable).add(dtype)
    for b in range(model.BuffersLength()):
        buffer = model.Buffers(b)
        constants += buffer.DataLength() or buffer.Size()
    main = model.Subgraphs(0)
    inputs = [_tensor_info(main.Tensors(i)) for i in main.InputsAsNumpy()]
    outputs = [_tensor_info(main.Tensors(i)) for i in main.OutputsAsNumpy()]
    metadata = {}
    for m in range(model.MetadataLength()):
        entry = model.Metadata(m)
        data = model.Buffers(entry.Buffer()).DataAsNumpy()
        if isinstance(data, np.ndarray):
            metadata[entry.Name().decode()] = bytes(data)
    version = metadata.get("min_runtime_version", b"").rstrip(b"\0").decode() or None
    if "int8" in dtypes_variable or any(t.dtype == "int8" for t in inputs):
        quantization = "int8"
    elif "int8" in dtypes_const:
        quantization = "dynamic"
    elif "float16" in dtypes_const:
        quantization = "float16"
    else:
        quantization = "float32"
    notes = json.loads(metadata["tf_vib"]) if "tf_vib" in metadata else None
    return TFLiteInfo(len(flat), ops, versions, inputs, outputs, int(constants), quantization,
                      version, model.SubgraphsLength(), op_dtypes, notes)
