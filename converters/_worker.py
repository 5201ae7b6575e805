"""The child process that runs the TFLite converter and the first invoke.

``python -m converters._worker JOB_DIR`` reads ``JOB_DIR/job.json`` and the SavedModel(s)
the parent exported, converts each job, runs one invoke of each file with
`converters.runtime`, and writes ``<name>.tflite`` and ``<name>.json`` per job. A failure
that Python can catch is written to ``<name>.error.json``; a crash (a segfault inside
TFLite) kills only this process, and the parent turns its exit signal into an exception.

Testing hook: with ``TF_VIB_CONVERTER_FAULT=convert`` (or ``invoke``) in the environment,
the worker kills itself with SIGSEGV at that point, as a crashing TFLite would.
"""

import json
import os
import pathlib
import signal
import sys
import traceback

import numpy as np

from converters._flatbuffer import op_kinds, packed

__all__ = ["run_job", "in_keras_order", "shorten_tensor_names", "denylisted_nodes", "with_metadata", "main"]


def _fault(point):
    """Tests' hook: ``TF_VIB_CONVERTER_FAULT=<point>`` makes the child die there (a segfault;
    at "exit", after every result is written, a plain non-zero exit)."""
    if os.environ.get("TF_VIB_CONVERTER_FAULT") == point:
        if point == "exit":
            sys.exit(3)
        os.kill(os.getpid(), signal.SIGSEGV)


def _converter(saved_model, job, representative):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=["serving_default"])
    mode = job["quantization"]
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "dynamic" and job["runtime"] == "tflite-runtime-2.14":
        # Per-channel dynamic-range weights need FULLY_CONNECTED version 12, which
        # tflite-runtime 2.14 lacks; per-tensor scales (version 9) load there.
        converter._experimental_disable_per_channel = True
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode in ("int8", "auto"):
        batch = job["batch_size"]

        def samples():
            # Keyed by the signature's input names: a list would be matched by position.
            for start in range(0, len(representative[0]) - batch + 1, batch):
                yield {name: array[start : start + batch] for name, array in zip(job["inputs"], representative,
                                                                                   strict=True)}

        converter.representative_dataset = samples
        if mode == "auto":  # float ops stay allowed: the plan's float layers need them
            return converter
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if job["int8_io"]:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter


def denylisted_nodes(calibrated, float_layers):
    """The output tensor names of the ops of ``float_layers`` in the calibrated (float) file.

    An op is a layer's when it has the layer's op type and an input of its weights' shape
    (`converters.plan.quantization.float_layer_ops`): TFLite names a fused LSTM's output
    ``tfl.unidirectional_sequence_lstm``, not after the layer. A layer that shares its op and
    weight shape with a float one is planned float as well (`converters.plan.quantization.auto_plan`).
    """
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(calibrated, 0))
    main = model.subgraphs[0]
    found = {entry["layer"]: [] for entry in float_layers}
    for op, op_name in zip(main.operators, op_kinds(model, main), strict=True):
        shapes = [main.tensors[i].shape.tolist() for i in op.inputs if i >= 0 and main.tensors[i].shape is not None]
        for entry in float_layers:
            if op_name == entry["op"] and entry["weight_shape"] in shapes:
                found[entry["layer"]] += [main.tensors[i].name.decode() for i in op.outputs]
    missing = [layer for layer, nodes in found.items() if not nodes]
    if missing:
        raise ValueError(f"the quantization plan's float layers {missing} have no op in the converted graph")
    return sorted({name for nodes in found.values() for name in nodes})


def _selective(converter, job):
    """Full int8 but for the plan's float layers: TFLite's selective quantization."""
    import tensorflow as tf

    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter,
                                                         debug_dataset=converter.representative_dataset)
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=denylisted_nodes(debugger.calibrated_model, job["float_layers"]))
    return debugger.get_nondebug_quantized_model()


def with_metadata(flat, name, data):
    """The same file with a metadata entry ``name`` holding ``data`` (bytes); an entry of
    that name already there gets the new data (the parent rewrites ``tf_vib`` after verifying)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flat, 0))
    values = np.frombuffer(data, np.uint8)
    for entry in model.metadata or []:
        if (entry.name.decode() if isinstance(entry.name, bytes) else entry.name) == name:
            model.buffers[entry.buffer].data = values
            return packed(model)
    buffer = schema.BufferT()
    buffer.data = values
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = name, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return packed(model)


def shorten_tensor_names(flat):
    """The same file with short names on its inner tensors (inputs and outputs keep theirs).

    The converter names every tensor after the TensorFlow ops fused into it; in an unrolled
    recurrent layer those names are half the file. Names are debugging aids only: the
    runtime addresses tensors by index and signature.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flat, 0))
    for subgraph in model.subgraphs:
        keep = set(subgraph.inputs.tolist()) | set(subgraph.outputs.tolist())
        for index, tensor in enumerate(subgraph.tensors):
            if index not in keep and tensor.name:
                short = tensor.name.split(b";")[0].rsplit(b"/", 1)[-1]
                tensor.name = short[:24]
    return packed(model)


def _arrays(path):
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def in_keras_order(flat, job):
    """The same file with its inputs and outputs in the Keras model's order.

    The converter orders a signature's tensors its own way (outputs follow its dict keys,
    which sort ``output_10`` before ``output_2``); `converters.runtime` feeds a list of
    inputs and returns a list of outputs in file order, so that order must be the model's.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    from converters.runtime import load_interpreter

    runner = load_interpreter(flat).interpreter.get_signature_runner("serving_default")
    wanted_inputs = [runner.get_input_details()[name]["index"] for name in job["inputs"]]
    wanted_outputs = [runner.get_output_details()[name]["index"] for name in job["outputs"]]
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flat, 0))
    main = model.subgraphs[0]
    if main.inputs.tolist() == wanted_inputs and main.outputs.tolist() == wanted_outputs:
        return flat
    main.inputs, main.outputs = np.array(wanted_inputs, np.int32), np.array(wanted_outputs, np.int32)
    return packed(model)


def run_job(job_dir, job):
    """Convert one job and invoke the result once; return the result record."""
    from converters._int8_repair import repair_int8_lstm
    from converters._state_repair import untie_state_variables
    from converters.runtime import load_interpreter

    job_dir = pathlib.Path(job_dir)
    representative = None
    if job.get("representative"):
        representative = _arrays(job_dir / job["representative"])
    _fault("convert")
    converter = _converter(str(job_dir / job["saved_model"]), job, representative)
    flat = _selective(converter, job) if job["quantization"] == "auto" else converter.convert()
    if job.get("shorten_names"):
        flat = shorten_tensor_names(flat)
    flat = in_keras_order(flat, job)
    metadata = dict(job.get("metadata") or {})
    flat, untied = untie_state_variables(flat)
    if untied:
        metadata["state_repairs"] = untied
    if job["quantization"] in ("int8", "auto"):
        flat, repairs = repair_int8_lstm(flat)
        if repairs:
            metadata["int8_repairs"] = repairs
    if metadata:
        flat = with_metadata(flat, "tf_vib", json.dumps(metadata).encode())
    (job_dir / f"{job['name']}.tflite").write_bytes(flat)
    probe = _arrays(job_dir / job["probe"])
    _fault("invoke")
    model = load_interpreter(flat)
    model.predict(probe)  # the first invoke, in the child: a crash in it stays here
    return {"runtime": model.runtime}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    job_dir = pathlib.Path(argv[0])
    jobs = json.loads((job_dir / "job.json").read_text())
    only = set(argv[1:])
    for job in jobs:
        if only and job["name"] not in only:
            continue
        try:
            record = run_job(job_dir, job)
        except Exception as error:
            (job_dir / f"{job['name']}.error.json").write_text(json.dumps({
                "type": type(error).__name__,
                "message": str(error),
                "traceback": traceback.format_exc(),
            }))
            continue
        (job_dir / f"{job['name']}.json").write_text(json.dumps(record))
    _fault("exit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
