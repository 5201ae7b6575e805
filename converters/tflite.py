"""Keras model -> TFLite bytes, converted in a child process so a TFLite crash stays there.

The parent validates every argument, strips VIB masks, decides what each recurrent layer
becomes (`converters.plan`), traces the model with a fixed batch size and saves that one
function as a SavedModel. A child Python process (`converters._worker`, started and read
by `converters._child`) runs the TFLite converter and the file's first invoke. A segfault
inside TFLite kills the child only; the parent raises `ConversionCrash` naming the layers
and the quantization mode.
"""

import json
import pathlib
import tempfile

import numpy as np

from converters import _fallback as fallbacks
from converters import inputs
from converters import plan as planning
from converters import streaming as streams
from converters._child import ConversionCrash, ConversionError, run_child, summarize_error
from converters.describe import RUNTIME_TARGETS, describe_tflite
from tf_vib import bridge
from tf_vib._checks import BadArgument, check_bool, check_choice, check_int
from tf_vib._keras import keras, require_tf_keras_model, tf

__all__ = [
    "QUANTIZATIONS",
    "MODES",
    "RECURRENT_PLANS",
    "ConversionError",
    "ConversionCrash",
    "to_tflite",
    "to_tflite_many",
    "save_tflite",
]

#: Quantization modes: float32, dynamic-range (int8 weights), float16 weights, full int8.
QUANTIZATIONS = ("float32", "dynamic", "float16", "int8")
#: ... and ``auto``: int8 or float32 per layer, by a cost table (`converters.plan.quantization`).
MODES = (*QUANTIZATIONS, "auto")
#: ``auto``: fused LSTM, WHILE loops in float modes, unrolled GRU/SimpleRNN in int8.
#: ``loop``: never unroll (full-int8 WHILE loops crash TFLite 2.21: for newer versions).
RECURRENT_PLANS = ("auto", "loop")


def _check_mode(quantization, int8_io, runtime, recurrent_plan):
    check_choice("quantization", quantization, MODES)
    check_bool("int8_io", int8_io)
    if int8_io and quantization != "int8":
        raise BadArgument(f"`int8_io=True` needs quantization='int8'; received quantization={quantization!r}")
    check_choice("runtime", runtime, RUNTIME_TARGETS)
    check_choice("recurrent_plan", recurrent_plan, RECURRENT_PLANS)


class _Job:
    def __init__(self, name, quantization, int8_io, runtime, batch_size, model, specs, plans, output_names=None):
        self.name, self.quantization, self.int8_io = name, quantization, int8_io
        self.runtime, self.batch_size = runtime, batch_size
        self.model, self.specs, self.plans = model, specs, plans
        self.output_names = output_names or inputs.output_names(model)
        self.convert_as, self.quantization_plans, self.float_layers = quantization, None, []
        self.cost_table = self.standardize = None

    def describe_layers(self):
        kinds = sorted({type(layer).__name__ for layer in self.model.layers
                        if not isinstance(layer, keras.layers.InputLayer)})
        return f"{', '.join(kinds)} layers"

    def plan_quantization(self, cost_table, fallback=None):
        """Plan ``auto``: the layers' modes, and the mode the worker converts with (``fallback``:
        see `converters.plan.auto_plan`)."""
        self.cost_table = cost_table
        self.quantization_plans, floats = planning.auto_plan(self.model, cost_table, self.runtime, fallback)
        int8 = len(floats) < len(self.quantization_plans) or not self.quantization_plans
        self.convert_as = ("auto" if floats else "int8") if int8 else "float32"
        self.float_layers = planning.float_layer_ops(floats)

    def refresh_metadata(self):
        unplanned = planning.unplanned_layers(self.model) if self.quantization_plans is not None else ()
        self.metadata = planning.file_metadata(self.quantization_plans, self.standardize, unplanned,
                                               self.convert_as != "float32", self.plans)

    def mode_text(self):
        return self.quantization + (" with int8 input/output" if self.int8_io else "")


def _jobs(model, quantizations, *, int8_io, runtime, batch_size, time_steps, recurrent_plan,
          representative_data, calibration_samples, feature_selection, unit_multiple, streaming=False,
          cost_table=None, standardize=None, verify_data=None, fallback=True):
    model, _ = bridge.to_internal(model, "model")  # a Keras 3 model converts as its tf_keras twin
    require_tf_keras_model(model, "model")
    check_bool("streaming", streaming)
    planning.resolve_unit_multiple(unit_multiple, "float32")  # validates it
    batch_size = check_int("batch_size", batch_size)
    time_steps = check_int("time_steps", time_steps, allow=(None,))
    calibration_samples = check_int("calibration_samples", calibration_samples)
    if not quantizations:
        raise ValueError("`quantizations` must name at least one mode")
    check_bool("int8_io", int8_io)
    check_bool("fallback", fallback)
    if verify_data is not None and "auto" not in quantizations:
        raise BadArgument(f"`verify_data` is for quantization='auto' (its fallback); received modes {quantizations}")
    if verify_data is not None and not fallback:
        raise BadArgument("`verify_data` is what the fallback decides on, and would be unused; received "
                          "fallback=False (verify the file with converters.verify instead)")
    for mode in quantizations:
        _check_mode(mode, int8_io if mode == "int8" else False, runtime, recurrent_plan)
    table = planning.load_cost_table(cost_table) if "auto" in quantizations else None
    needs_data = [mode for mode in ("int8", "auto") if mode in quantizations]
    if needs_data and representative_data is None:
        raise ValueError(
            f"quantization={needs_data[0]!r} needs `representative_data`: a few hundred typical input "
            "samples, shape (n, ...) like the model's input, to calibrate activation ranges"
        )
    signature = streams.step_model(model)[1] if streaming else None  # its refusals come first
    jobs, prepared, sources = [], {}, {}
    for mode in dict.fromkeys(quantizations):
        key = mode in ("int8", "auto")
        if key not in prepared:
            sources[key] = streams.step_model(model, one_product=not key)[0] if streaming else model
            prepared[key] = planning.prepare(sources[key], quantization=mode, batch_size=batch_size,
                                             time_steps=None if streaming else time_steps,
                                             recurrent_plan=recurrent_plan,
                                             feature_selection=feature_selection,
                                             unit_multiple=unit_multiple)
        jobs.append(_Job(mode, mode, int8_io and mode == "int8", runtime, batch_size, *prepared[key],
                         signature and signature.output_names))
        if mode == "auto":
            jobs[-1].plan_quantization(table)
    specs = jobs[0].specs
    standardize = planning.check_standardize(standardize, specs)
    representative = None
    if representative_data is not None and streaming:  # clips -> frames and the states before them
        representative_data = streams.step_samples(sources[True] if True in sources else sources[False],
                                                   signature, representative_data,
                                                   calibration_samples)
    if representative_data is not None:
        limits = inputs.token_limits(jobs[0].model)
        representative = inputs.as_samples(representative_data, specs, limits, "representative_data")
        representative = [samples[:calibration_samples] for samples in representative]
        if len(representative[0]) < batch_size:
            raise ValueError(f"`representative_data` holds {len(representative[0])} samples, fewer "
                             f"than one batch of batch_size={batch_size}")
    _check_verify_data(verify_data, None if streaming else specs, inputs.token_limits(jobs[0].model))
    for job in jobs:
        function = planning.export_function(job.model, job.specs, standardize, job.output_names)
        bad = planning.unsupported_ops(function, job.model)
        if bad:
            listed = ", ".join(f"{op} in layer {layer!r}" for op, layer in bad)
            raise ValueError(f"`model` {model.name!r} has ops that TFLite cannot run: {listed} "
                             "(Python callbacks); rewrite those layers with TensorFlow ops")
        job.function, job.standardize = function, standardize
        job.refresh_metadata()
    return jobs, representative


def _check_verify_data(verify_data, specs, limits):
    """``verify_data`` (inputs, or ``(x, y)``) checked before any conversion; ``specs`` None
    (a streaming file's clips): only its form."""
    if verify_data is None:
        return
    if isinstance(verify_data, tuple) and len(verify_data) != 2:
        raise BadArgument(f"`verify_data` must be inputs x or a pair (x, y); received a tuple of {len(verify_data)}")
    x, y = fallbacks.split_verify_data(verify_data)
    if specs is not None:
        n = len(inputs.as_samples(x, specs, limits, "verify_data")[0])
        if y is not None and not isinstance(y, list) and len(y) != n:
            raise BadArgument(f"`verify_data` holds {n} samples but {len(y)} labels; pass (x, y) of the same length")


def _export(job, directory):
    module = tf.Module()
    module.variables_ = list(job.model.variables)  # only the weights, not Keras metadata
    tf.saved_model.save(module, str(directory), signatures={"serving_default": job.function})


def _convert(jobs, representative, isolate, timeout):
    with tempfile.TemporaryDirectory(prefix="tf-vib-convert-") as tmp:
        directory = pathlib.Path(tmp)
        records, exported = [], {}
        for job in jobs:
            key = id(job.model)
            if key not in exported:
                exported[key] = f"saved_model_{len(exported)}"
                _export(job, directory / exported[key])
            probe = ([samples[: job.batch_size] for samples in representative] if representative is not None
                     else inputs.probe_batch(job.specs, inputs.token_limits(job.model)))
            np.savez(directory / f"{job.name}.probe.npz", *probe)
            records.append({"name": job.name, "quantization": job.convert_as, "int8_io": job.int8_io,
                            "runtime": job.runtime, "batch_size": job.batch_size,
                            "saved_model": exported[key], "probe": f"{job.name}.probe.npz",
                            "inputs": [spec.name for spec in job.specs],
                            "outputs": job.output_names,
                            "shorten_names": any(p.becomes.startswith("unrolled") for p in job.plans),
                            "float_layers": job.float_layers, "metadata": job.metadata,
                            "representative": "representative.npz" if job.convert_as in ("int8", "auto") else None})
        if representative is not None:
            np.savez(directory / "representative.npz", *representative)
        (directory / "job.json").write_text(json.dumps(records))
        if isolate:
            run_child(directory, jobs, timeout)
        else:
            from converters import _worker

            _worker.main([str(directory)])
        results = {}
        for job in jobs:
            error_path = directory / f"{job.name}.error.json"
            if error_path.exists():
                error = json.loads(error_path.read_text())
                raise ConversionError(
                    f"TFLite could not convert model {job.model.name!r} ({job.describe_layers()}) "
                    f"to {job.mode_text()}: {error['type']}:\n  {summarize_error(error['message'])}"
                )
            flat = (directory / f"{job.name}.tflite").read_bytes()
            reason = describe_tflite(flat).runtime_support()[job.runtime]
            if reason is not None:
                raise ConversionError(
                    f"the {job.mode_text()} file cannot run on {job.runtime}: {reason}. Use "
                    "runtime='ai-edge-litert' on the device, or another quantization mode"
                )
            results[job.name] = flat
        return results


def to_tflite_many(model, quantizations=QUANTIZATIONS, *, representative_data=None, batch_size=1,
                   int8_io=False, runtime="ai-edge-litert", time_steps=None, recurrent_plan="auto",
                   feature_selection="auto", unit_multiple="auto", calibration_samples=500, isolate=True,
                   timeout=3600, streaming=False, cost_table=None, standardize=None, verify_data=None,
                   fallback=True):
    """`to_tflite` for several modes at once, in one child process: ``{mode: bytes}``.

    With ``"auto"`` and ``fallback=True`` the ``auto`` file is converted in a child of its
    own (once per fallback step tried, `converters._fallback`), the other modes in another.
    """
    jobs, representative = _jobs(
        model, list(quantizations), int8_io=int8_io, runtime=runtime, batch_size=batch_size,
        time_steps=time_steps, recurrent_plan=recurrent_plan,
        representative_data=representative_data, calibration_samples=calibration_samples,
        feature_selection=feature_selection, unit_multiple=unit_multiple, streaming=streaming,
        cost_table=cost_table, standardize=standardize, verify_data=verify_data, fallback=fallback,
    )
    auto = [job for job in jobs if job.name == "auto"] if fallback else []
    others = [job for job in jobs if job not in auto]
    results = _convert(others, representative, isolate, timeout) if others else {}
    if auto:
        check, not_checked = fallbacks.verification_check(model, streaming, verify_data, representative)
        results["auto"] = fallbacks.convert_auto(
            auto[0], lambda batch: _convert(batch, representative, isolate, timeout), check, not_checked)
    return {job.name: results[job.name] for job in jobs}


def to_tflite(model, *, quantization="dynamic", representative_data=None, batch_size=1,
              int8_io=False, runtime="ai-edge-litert", time_steps=None, recurrent_plan="auto",
              feature_selection="auto", unit_multiple="auto", calibration_samples=500, isolate=True,
              timeout=3600, streaming=False, cost_table=None, standardize=None, verify_data=None,
              fallback=True):
    """Convert a tf_keras model (plain, or with VIB layers) to TFLite bytes.

    A model with VIB layers is stripped first (``tf_vib.strip_masks``). Each ``LSTM``
    becomes TFLite's fused ``UNIDIRECTIONAL_SEQUENCE_LSTM`` (the model is traced with a
    fixed batch size); see `converters.plan` for what other recurrent layers become.
    Conversion and the first invoke run in a child process.

    Args:
      model: a tf_keras (or Keras 3) Sequential or functional model, with one or more inputs (float
        features, or int32 token ids, which stay int32 in every mode) and outputs. It is
        not modified. The file's inputs and outputs are in the model's order and its inputs
        keep their names (see `converters.inputs.input_specs`).
      quantization: ``"float32"``, ``"dynamic"`` (default; int8 weights, float
        activations), ``"float16"`` (float16 weights), ``"int8"`` (full integer) or
        ``"auto"``: int8 for each layer whose int8 kernel is faster on the target by
        ``cost_table``, float32 for the others (`converters.plan.quantization`; the file's
        description lists the choices).
      representative_data: input samples, shape (n, ...) like the model's input (for
        several inputs: a list in the model's order or a dict by input name), or a
        ``tf.data.Dataset`` of them; required for int8 (calibration), optional otherwise.
        Token ids must lie in ``[0, input_dim)`` of the ``Embedding`` reading them.
      batch_size: int >= 1, default 1: the file's fixed batch dimension.
      int8_io: bool, default False. With int8, make the input and output tensors int8 too.
      runtime: ``"ai-edge-litert"`` (default) or ``"tflite-runtime-2.14"``: the runtime the
        file must load in. For tflite-runtime 2.14, dynamic-range weights use per-tensor
        scales (per-channel ones need ops it lacks); a file that still cannot load there
        raises before it is returned.
      time_steps: int, the number of steps for a model whose input has no fixed length
        (``Input((None, features))`` or token ids ``Input((None,), dtype="int32")``).
      recurrent_plan: ``"auto"`` (default) or ``"loop"``; see `RECURRENT_PLANS`.
      feature_selection: what the ``SelectFeatures`` gather of a stripped model (its kept
        input features) becomes: ``"auto"`` (default) zero rows in the next layer's kernel
        when they add few weights, else a ``GATHER``; ``"gather"`` or ``"zero_rows"`` force
        one (see `converters.plan.fold_feature_selection`). Zero rows need finite values in
        the removed features (NaN times zero is NaN): pass ``"gather"`` if they may hold NaN.
      unit_multiple: ``"auto"`` (default) or an int >= 1. Each fused LSTM gets zero units up
        to a multiple of it; the outputs do not change, the time does: TFLite's float
        kernels work 4 floats at a time (an LSTM(12) runs faster than an LSTM(11), on x86
        and on a Raspberry Pi's Cortex-A72). ``"auto"`` pads to a multiple of 4 in the float
        modes and not in int8, whose kernel grows with every unit; 1 never pads (see
        `converters.plan.pad_units`).
      calibration_samples: int, at most this many representative samples are used.
      isolate: bool, default True: convert in a child process. False converts in this
        process (faster; a TFLite crash then ends it).
      timeout: seconds the child may take.
      streaming: bool, default False. True writes a file that takes one frame (or one
        frame's features, or one token) per invoke, the recurrent layers' states as extra
        inputs and outputs (``<layer>_h``, and ``<layer>_c`` for an LSTM), for a device that
        runs it frame by frame; fed back from zeros, its output at a clip's last frame is the
        whole-clip model's. ``representative_data`` are then whole clips, and
        ``time_steps`` is not needed. Signature and supported models: `converters.streaming`;
        models it cannot stream raise before conversion. Run it with `TFLiteModel.stream`
        or `TFLiteModel.step`, check it with `converters.verify_streaming`.
      cost_table: for ``"auto"``: None (the shipped emulated Cortex-A72 table), a path to
        a JSON cost table, or its dict (made by ``benchmarks/cost_table.py``).
      standardize: None, or ``(mean, std)`` (or a dict with them, such as a loader's
        ``data.info``): the file standardises its raw input itself
        (`converters.plan.standardize`); ``representative_data`` is then raw as well.
      verify_data: for ``"auto"``: None (the calibration samples, without labels; a streaming
        file is then not verified), inputs, or ``(x, y)`` with labels (held-out samples judge
        best; a tuple is always ``(x, y)``): the samples the fallback verifies each file on
        (`converters.verify`; `verify_streaming`, on clips, for a streaming file). It decides
        only on at least ``FALLBACK_MIN_SAMPLES`` (200) samples.
      fallback: bool, default True. For ``"auto"``: when the cost table's file misses its
        verification target (or TFLite fails on it), convert again with the LSTMs float32,
        then all float32, and keep the first that passes (`converters._fallback`); the
        file's description (``describe_tflite(flat).tf_vib["quantization_fallback"]``) says
        which plan it has and why each earlier one was abandoned. False: one conversion.

    Returns:
      The ``.tflite`` file's bytes.

    Raises:
      ValueError, TypeError: bad arguments, before anything is converted.
      ConversionError: TFLite refused the model; ``ConversionCrash``: TFLite crashed.

    Example:

    >>> model = keras.Sequential([keras.Input((6, 3)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    >>> x = np.random.default_rng(0).normal(size=(32, 6, 3)).astype("float32")
    >>> flat = converters.to_tflite(model, quantization="int8", representative_data=x)
    >>> "UNIDIRECTIONAL_SEQUENCE_LSTM" in converters.describe_tflite(flat).ops
    True
    """
    _check_mode(quantization, int8_io, runtime, recurrent_plan)
    return to_tflite_many(
        model, [quantization], representative_data=representative_data, batch_size=batch_size,
        int8_io=int8_io, runtime=runtime, time_steps=time_steps, recurrent_plan=recurrent_plan,
        feature_selection=feature_selection, unit_multiple=unit_multiple,
        calibration_samples=calibration_samples, isolate=isolate, timeout=timeout, streaming=streaming,
        cost_table=cost_table, standardize=standardize, verify_data=verify_data, fallback=fallback,
    )[quantization]


def save_tflite(model, path, **kwargs):
    """Convert with `to_tflite` (same keyword arguments) and write the file; return its path."""
    path = pathlib.Path(path)
    if path.suffix != ".tflite":
        raise ValueError(f"`path` must end in .tflite; received {str(path)!r}")
    flat = to_tflite(model, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flat)
    return path
