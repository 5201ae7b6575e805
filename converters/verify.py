"""Does the ``.tflite`` file compute what the Keras model computes? Measured, per sample.

Targets (the converter's contract), on every output value of every sample:

- float32: within 1e-4 of the Keras outputs (logits);
- float16 and dynamic-range: within 1e-2 of the output scale, i.e.
  ``1e-2 * max(1, max |Keras output|)``: relative, because 8-bit and 16-bit weights alone
  move large logits by more than an absolute 1e-2 (measured in docs/deployment.md,
  "Verification targets"). A file that misses this passes when the class probabilities
  (softmax of logit outputs) are within the plain 1e-2, which is what a classifier's user
  reads;
- full int8, and ``auto`` files with any int8 layer: accuracy within 1 point of the Keras model's (with labels), or the same class
  as the Keras model on 99% of the samples (without).

A *regression* output (`output_tasks`: trained with a regression loss, or, without a known
loss, one unit without a softmax or sigmoid) has no classes: it is reported by its
differences relative to the spread (standard deviation) of the Keras outputs and, with
targets, by the MSE of each against them. The float modes' targets are the same (without
the softmax fallback); int8's is R^2-like: with targets, the file's MSE at most the Keras
model's plus 1% of the targets' variance (R^2 within 0.01); without, a mean squared
difference at most 1% of the Keras outputs' variance.
"""

import dataclasses

import numpy as np

from converters._outputs import output_tasks, per_output_labels, tasks_and_shapes
from converters.describe import describe_tflite
from converters.inputs import input_names
from converters.plan.standardize import standardized
from converters.runtime import TFLiteModel, load_interpreter, split_inputs
from tf_vib import bridge
from tf_vib._keras import require_tf_keras_model

__all__ = ["Verification", "verify", "evaluate_tflite", "output_tasks", "TOLERANCES", "INT8_ACCURACY_DROP",
           "INT8_VARIANCE_SHARE"]

#: Largest accepted |Keras - TFLite| on any output value, per mode: (tolerance, relative).
#: A relative tolerance is multiplied by ``max(1, max |Keras output|)``.
TOLERANCES = {"float32": (1e-4, False), "float16": (1e-2, True), "dynamic": (1e-2, True)}
#: Largest accepted accuracy loss of a full-int8 file against the Keras model (1 point).
INT8_ACCURACY_DROP = 0.01
#: A regression output's int8 target: the extra squared error, as a share of the variance
#: (of the targets, or without them of the Keras outputs), at most 1% (R^2 within 0.01).
INT8_VARIANCE_SHARE = 0.01

@dataclasses.dataclass
class Verification:
    """Keras against TFLite on the same inputs.

    Attributes:
      quantization: the file's mode (read from the file).
      samples: number of inputs compared.
      max_abs_diff, mean_abs_diff: over every output value.
      argmax_agreement: share of samples where both pick the same class (the lowest over
        the classifier outputs; None when every output is a regression output).
      keras_accuracy, tflite_accuracy: with labels, else None; for a file with several
        outputs, a list with one entry (or None) per output.
      runtime: the TFLite runtime used.
      criterion: the target that applies, in words.
      passed: whether the target holds.
      regression: whether the outputs are regression outputs (`output_tasks`; a list for a
        file with several outputs). Their accuracies are None.
      relative_max_diff, relative_mean_diff: over the regression outputs, max and mean
        |Keras - TFLite| divided by the standard deviation of their Keras values (None
        without a regression output).
      keras_mse, tflite_mse: the regression outputs' mean squared error against the targets
        (with ``y``; a list per output for several outputs, None for a classifier output).
      planned: whether the file is a ``quantization="auto"`` file (its metadata holds a
        per-layer plan); its advice then leaves ``auto`` out.
      advice: (a property) what to do when ``passed`` is False (another mode), "" otherwise;
        ``str()`` ends with it.
    """

    quantization: str
    samples: int
    max_abs_diff: float
    mean_abs_diff: float
    argmax_agreement: float
    keras_accuracy: float | list | None
    tflite_accuracy: float | list | None
    runtime: str
    criterion: str
    passed: bool
    regression: bool | list = False
    relative_max_diff: float | None = None
    relative_mean_diff: float | None = None
    keras_mse: float | list | None = None
    tflite_mse: float | list | None = None
    planned: bool = False

    def __str__(self):
        text = (f"{self.quantization}: max |keras - tflite| {self.max_abs_diff:.3g} "
                f"(mean {self.mean_abs_diff:.3g})")
        if self.relative_max_diff is not None:
            text += (f", {100 * self.relative_max_diff:.3g}% (mean {100 * self.relative_mean_diff:.3g}%) of the "
                     "Keras outputs' standard deviation")
        if self.argmax_agreement is not None:
            text += f", same class on {100 * self.argmax_agreement:.2f}% of {self.samples} samples"
        else:
            text += f", on {self.samples} samples"
        if self.keras_accuracy is not None and any(a is not None for a in _as_list(self.keras_accuracy)):
            text += f", accuracy keras {_percent(self.keras_accuracy)} / tflite {_percent(self.tflite_accuracy)}"
        if self.keras_mse is not None:
            text += f", MSE keras {_number(self.keras_mse)} / tflite {_number(self.tflite_mse)}"
        text = f"{text} [{self.criterion}: {'passed' if self.passed else 'FAILED'}] ({self.runtime})"
        return f"{text}. {self.advice}" if self.advice else text

    @property
    def advice(self):
        """What to do about a failed verification, in words ("" when it passed)."""
        if self.passed:
            return ""
        if self.quantization == "int8":
            other = ("quantization='dynamic' (int8 weights, float activations) or 'float16' or 'float32'"
                     + ("" if self.planned else ", or 'auto' (int8 only for the layers the cost table finds "
                        "faster in int8: small LSTMs stay float32)"))
            return (f"The {'auto plan' if self.planned else 'int8'} file does not compute what the model computes: "
                    f"convert with {other}; docs/deployment.md lists the shapes known to miss in int8 "
                    "(a BatchNormalization between recurrent layers)")
        if self.quantization == "float32":
            return ("A float32 file should match the model within 1e-4: this is a converter bug unless "
                    "docs/deployment.md lists the case; please report it with the model")
        return (f"The {self.quantization} file's rounding moves the outputs more than its target: convert with "
                "quantization='float32' (docs/deployment.md, 'Verification targets')")


def _number(value):
    if isinstance(value, list):
        return "[" + ", ".join("-" if v is None else f"{v:.4g}" for v in value) + "]"
    return f"{value:.4g}"


def _percent(value):
    if isinstance(value, list):
        return "[" + ", ".join("-" if v is None else f"{100 * v:.2f}%" for v in value) + "]"
    return f"{100 * value:.2f}%"


def _are_logits(outputs):
    """Class scores that are not already probabilities (rows of >= 2 values not summing to 1)."""
    rows = outputs.reshape(len(outputs), -1)
    probabilities = rows.min() >= 0 and np.allclose(rows.sum(axis=-1), 1.0, atol=1e-3)
    return rows.shape[-1] >= 2 and not probabilities


def _softmax(logits):
    rows = logits.reshape(len(logits), -1).astype(np.float64)
    e = np.exp(rows - rows.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _loaded(tflite, num_threads, runtime):
    if isinstance(tflite, TFLiteModel):
        return tflite, None
    flat = tflite if isinstance(tflite, (bytes, bytearray)) else open(tflite, "rb").read()
    return load_interpreter(flat, num_threads=num_threads, runtime=runtime), flat


def _as_list(value):
    return list(value) if isinstance(value, list) else [value]


def _checked_inputs(model, loaded, x):
    """``x`` as the file's list of inputs, checked against the file and the model before anything runs."""
    if len(model.inputs) != len(loaded.input_details):
        raise ValueError(f"`model` has {len(model.inputs)} inputs but the file has "
                         f"{len(loaded.input_details)} ({loaded.input_names}): is it the model's file?")
    arrays = loaded.as_inputs(x)
    if len(arrays[0]) == 0:
        raise ValueError("`x` holds no samples")
    for array, tensor, label in zip(arrays, model.inputs, split_inputs(x, loaded.input_names)[1], strict=True):
        expected = tuple(tensor.shape[1:])
        if len(expected) != array.ndim - 1 or any(e not in (None, d) for e, d in zip(expected, array.shape[1:], strict=False)):
            raise ValueError(f"`{label}` has samples of shape {array.shape[1:]}, but the model takes {expected}")
    return arrays


def _keras_inputs(model, arrays):
    if len(arrays) == 1:
        return arrays[0]
    return dict(zip(input_names(model), arrays, strict=True)) if isinstance(model.input, dict) else arrays


def evaluate_tflite(tflite, x, y, *, num_threads=1, runtime=None):
    """Accuracy of a ``.tflite`` classifier (bytes, path or `TFLiteModel`) on ``(x, y)``.

    ``x`` is an array, or for a file with several inputs a list or a dict by input name
    (see `TFLiteModel.as_inputs`). Int8 inputs and outputs are quantized and dequantized
    with the file's own scales; the recurrent state is reset before every batch.

    Returns:
      The accuracy; for a file with several outputs, ``y`` is a list of labels (one per
      output) and the result a list of accuracies.
    """
    model, _ = _loaded(tflite, num_threads, runtime)
    arrays = model.as_inputs(x)
    outputs = len(model.output_details)
    labels = per_output_labels(y, len(arrays[0]), [len(d["shape"]) for d in model.output_details])
    got = _as_list(model.predict(arrays))
    accuracies = [None if lab is None else float(np.mean(g.argmax(axis=-1) == lab)) for g, lab in zip(got, labels, strict=True)]
    return accuracies if outputs > 1 else accuracies[0]


def _judge_regression(quantization, expected, got, targets):
    """``(criterion, passed, keras MSE, tflite MSE, spread)`` for one regression output."""
    diff = (expected - got).astype(np.float64)
    spread = float(np.std(expected))
    keras_mse = tflite_mse = None
    if targets is not None:
        keras_mse = float(np.mean((expected - targets.reshape(expected.shape)) ** 2))
        tflite_mse = float(np.mean((got - targets.reshape(got.shape)) ** 2))
    if quantization in TOLERANCES:
        tolerance, relative = TOLERANCES[quantization]
        scale = max(1.0, float(np.abs(expected).max())) if relative else 1.0
        criterion = f"max |diff| <= {tolerance:g}" + (f" x output scale {scale:.3g}" if relative else "")
        passed = float(np.abs(diff).max()) <= tolerance * scale
    elif targets is not None:
        variance = float(np.var(targets))
        criterion = (f"MSE <= Keras's + {100 * INT8_VARIANCE_SHARE:g}% of the targets' variance ({variance:.3g}), "
                     "R^2 within 0.01")
        passed = tflite_mse <= keras_mse + INT8_VARIANCE_SHARE * variance + 1e-12
    else:
        criterion = (f"mean squared difference <= {100 * INT8_VARIANCE_SHARE:g}% of the Keras outputs' "
                     f"variance ({spread ** 2:.3g})")
        passed = float(np.mean(diff ** 2)) <= INT8_VARIANCE_SHARE * spread ** 2 + 1e-12
    return criterion, bool(passed), keras_mse, tflite_mse, spread


def _judge(quantization, expected, got, labels):
    """``(criterion, passed, keras accuracy, tflite accuracy, agreement)`` for one output."""
    diff = np.abs(expected - got)
    agreement = float(np.mean(expected.argmax(-1) == got.argmax(-1)))
    keras_accuracy = tflite_accuracy = None
    if labels is not None:
        keras_accuracy = float(np.mean(expected.argmax(-1) == labels))
        tflite_accuracy = float(np.mean(got.argmax(-1) == labels))
    if quantization in TOLERANCES:
        tolerance, relative = TOLERANCES[quantization]
        scale = max(1.0, float(np.abs(expected).max())) if relative else 1.0
        criterion = f"max |diff| <= {tolerance:g}" + (f" x output scale {scale:.3g}" if relative else "")
        passed = float(diff.max()) <= tolerance * scale
        if relative and not passed and _are_logits(expected):
            probs = float(np.abs(_softmax(expected) - _softmax(got)).max())
            criterion += f", or max |diff| of softmax probabilities {probs:.3g} <= {tolerance:g}"
            passed = probs <= tolerance
    elif keras_accuracy is not None:
        criterion = f"accuracy within {100 * INT8_ACCURACY_DROP:g} point of Keras"
        passed = tflite_accuracy >= keras_accuracy - INT8_ACCURACY_DROP - 1e-12
    else:
        criterion = f"same class as Keras on >= {100 * (1 - INT8_ACCURACY_DROP):g}% of samples"
        passed = agreement >= 1 - INT8_ACCURACY_DROP - 1e-12
    return criterion, bool(passed), keras_accuracy, tflite_accuracy, agreement


def verify(model, tflite, x, y=None, *, quantization=None, num_threads=1, runtime=None):
    """Compare a Keras model and its ``.tflite`` file on inputs ``x`` (and labels ``y``).

    ``x`` is checked against the file and the model (number of inputs, each sample's
    shape) before either runs.

    Args:
      model: the tf_keras model the file came from (plain or with VIB layers), or the Keras 3
        model: its own outputs are the reference.
      tflite: the file's bytes, its path, or a `TFLiteModel`.
      x: inputs, shape (n, ...); for a model with several inputs, a list of arrays in the
        model's input order or a dict by input name. For a file that standardises its
        input (``standardize=`` at conversion, noted in its metadata), raw inputs: the
        model gets them standardised.
      y: optional labels (class indices or one-hot; per step, ``(n, steps)``, for a per-step
        output): int8 is then judged on accuracy. For
        a model with several outputs, a list with one entry (labels or None) per output.
      quantization: the mode whose target applies; default: read from the file.
      num_threads, runtime: as in `converters.runtime.load_interpreter`.

    Returns:
      A `Verification`; ``passed`` says whether the target holds (nothing is raised). With
      several outputs, every output must meet the target: the differences are over all
      of them, ``argmax_agreement`` is the lowest, and the accuracies are lists.
    """
    user_model = model
    model, _ = bridge.to_internal(model, "model")  # a Keras 3 model is checked on its tf_keras twin
    require_tf_keras_model(model, "model")
    loaded, flat = _loaded(tflite, num_threads, runtime)
    info = describe_tflite(flat) if flat is not None else None
    if quantization is None:
        if info is None:
            raise ValueError("pass `quantization=` when `tflite` is an already loaded TFLiteModel")
        quantization = info.quantization
    if quantization not in (*TOLERANCES, "int8"):
        raise ValueError(f"`quantization` must be one of {[*TOLERANCES, 'int8']}; received {quantization!r}")
    arrays = _checked_inputs(model, loaded, x)
    tasks, shapes = tasks_and_shapes(user_model, model)
    labels = per_output_labels(y, len(arrays[0]), [len(o.shape) for o in model.outputs], shapes)
    keras_arrays = arrays
    standardization = ((info and info.tf_vib) or {}).get("input_standardization")
    if standardization is not None:  # the file takes raw inputs, the model standardised ones
        keras_arrays = [standardized(arrays[0], np.float32(standardization["mean"]), np.float32(standardization["std"]))]
    expected = [np.asarray(e, dtype=np.float32)
                for e in _as_list(user_model.predict(_keras_inputs(model, keras_arrays), verbose=0, batch_size=256))]
    got = _as_list(loaded.predict(arrays))
    expected = [e.reshape(g.shape) for e, g in zip(expected, got, strict=True)]
    result = judged(quantization, list(zip(expected, got, strict=True)), labels, len(arrays[0]), loaded.runtime,
                    tasks=tasks)
    result.planned = bool(info and info.tf_vib and "quantization_plan" in info.tf_vib)
    return result


def judged(quantization, pairs, labels, samples, runtime, tasks=None):
    """The `Verification` of ``[(Keras outputs, TFLite outputs)]``, one pair (and labels) per
    output; ``tasks``: `output_tasks` (default: every output a classifier's)."""
    regression = [task == "regression" for task in tasks] if tasks else [False] * len(pairs)
    judged = [(_judge_regression if r else _judge)(quantization, e, g, lab)
              for (e, g), lab, r in zip(pairs, labels, regression, strict=True)]
    criteria = list(dict.fromkeys(j[0] for j in judged))
    diffs = np.concatenate([np.abs(e - g).ravel() for e, g in pairs])

    def per_output(index, wanted):
        values = [j[index] if r == wanted else None for j, r in zip(judged, regression, strict=True)]
        if len(judged) == 1:
            return values[0]
        return None if all(v is None for v in values) else values

    agreements = [j[4] for j, r in zip(judged, regression, strict=True) if not r]
    relative = [None, None]
    if any(regression):
        spreads = [j[4] for j, r in zip(judged, regression, strict=True) if r]
        scaled = np.concatenate([np.abs(e - g).ravel() / max(s, 1e-12) for (e, g), s in
                                 zip([p for p, r in zip(pairs, regression, strict=True) if r], spreads, strict=True)])
        relative = [float(scaled.max()), float(scaled.mean())]
    return Verification(quantization, samples, float(diffs.max()), float(diffs.mean()),
                        min(agreements) if agreements else None, per_output(2, False), per_output(3, False),
                        runtime, "; ".join(criteria), all(j[1] for j in judged),
                        regression=regression[0] if len(regression) == 1 else regression,
                        relative_max_diff=relative[0], relative_mean_diff=relative[1],
                        keras_mse=per_output(2, True), tflite_mse=per_output(3, True))
