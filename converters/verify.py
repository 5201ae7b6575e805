"""Does the ``.tflite`` file compute what the Keras model computes? Measured, per sample.

Targets (the converter's contract), on every output value of every sample:

- float32: within 1e-4 of the Keras outputs (logits);
- float16 and dynamic-range: within 1e-2 of the output scale, i.e.
  ``1e-2 * max(1, max |Keras output|)``. float16 weights alone move logits of magnitude 10
  by up to 0.019 (0.2% of the scale) in the benchmark's small LSTMs.
  Int8 weights alone cannot do better in absolute terms: rounding the weights of a trained
  LSTM(128) on JapaneseVowels to int8 per channel, in Keras, moves logits of magnitude 11
  by 0.05 (the TFLite file: 0.06; another seed's baseline: 0.15, 1.3% of its scale). A file
  that misses this passes when the class probabilities (softmax of logit outputs) are
  within the plain 1e-2, which is what a classifier's user reads;
- full int8: accuracy within 1 point of the Keras model's (with labels), or the same class
  as the Keras model on 99% of the samples (without).
"""

import dataclasses

import numpy as np

from converters.describe import describe_tflite
from converters.runtime import TFLiteModel, load_interpreter
from tf_vib._keras import require_tf_keras_model

__all__ = ["Verification", "verify", "evaluate_tflite", "TOLERANCES", "INT8_ACCURACY_DROP"]

#: Largest accepted |Keras - TFLite| on any output value, per mode: (tolerance, relative).
#: A relative tolerance is multiplied by ``max(1, max |Keras output|)``.
TOLERANCES = {"float32": (1e-4, False), "float16": (1e-2, True), "dynamic": (1e-2, True)}
#: Largest accepted accuracy loss of a full-int8 file against the Keras model (1 point).
INT8_ACCURACY_DROP = 0.01


@dataclasses.dataclass
class Verification:
    """Keras against TFLite on the same inputs.

    Attributes:
      quantization: the file's mode (read from the file).
      samples: number of inputs compared.
      max_abs_diff, mean_abs_diff: over every output value.
      argmax_agreement: share of samples where both pick the same class.
      keras_accuracy, tflite_accuracy: with labels, else None.
      runtime: the TFLite runtime used.
      criterion: the target that applies, in words.
      passed: whether the target holds.
    """

    quantization: str
    samples: int
    max_abs_diff: float
    mean_abs_diff: float
    argmax_agreement: float
    keras_accuracy: float | None
    tflite_accuracy: float | None
    runtime: str
    criterion: str
    passed: bool

    def __str__(self):
        text = (f"{self.quantization}: max |keras - tflite| {self.max_abs_diff:.3g} "
                f"(mean {self.mean_abs_diff:.3g}), same class on {100 * self.argmax_agreement:.2f}% "
                f"of {self.samples} samples")
        if self.keras_accuracy is not None:
            text += (f", accuracy keras {100 * self.keras_accuracy:.2f}% / tflite "
                     f"{100 * self.tflite_accuracy:.2f}%")
        return f"{text} [{self.criterion}: {'passed' if self.passed else 'FAILED'}] ({self.runtime})"


def _are_logits(outputs):
    """Class scores that are not already probabilities (rows of >= 2 values not summing to 1)."""
    rows = outputs.reshape(len(outputs), -1)
    probabilities = rows.min() >= 0 and np.allclose(rows.sum(axis=-1), 1.0, atol=1e-3)
    return rows.shape[-1] >= 2 and not probabilities


def _softmax(logits):
    rows = logits.reshape(len(logits), -1).astype(np.float64)
    e = np.exp(rows - rows.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _labels(y, n, argument="y"):
    labels = np.asarray(y)
    if labels.ndim == 2:
        labels = labels.argmax(axis=-1)
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"`{argument}` must hold {n} class indices or one-hot rows; received shape "
                         f"{np.shape(y)}")
    return labels.astype(np.int64)


def _loaded(tflite, num_threads, runtime):
    if isinstance(tflite, TFLiteModel):
        return tflite, None
    flat = tflite if isinstance(tflite, (bytes, bytearray)) else open(tflite, "rb").read()
    return load_interpreter(flat, num_threads=num_threads, runtime=runtime), flat


def evaluate_tflite(tflite, x, y, *, num_threads=1, runtime=None):
    """Accuracy of a ``.tflite`` classifier (bytes, path or `TFLiteModel`) on ``(x, y)``.

    Int8 inputs and outputs are quantized and dequantized with the file's own scales; the
    recurrent state is reset before every batch.
    """
    model, _ = _loaded(tflite, num_threads, runtime)
    x = np.asarray(x, dtype=np.float32)
    labels = _labels(y, len(x))
    return float(np.mean(model.predict(x).argmax(axis=-1) == labels))


def verify(model, tflite, x, y=None, *, quantization=None, num_threads=1, runtime=None):
    """Compare a Keras model and its ``.tflite`` file on inputs ``x`` (and labels ``y``).

    Args:
      model: the tf_keras model the file came from (plain or with VIB layers).
      tflite: the file's bytes, its path, or a `TFLiteModel`.
      x: inputs, shape (n, ...).
      y: optional labels (class indices or one-hot): int8 is then judged on accuracy.
      quantization: the mode whose target applies; default: read from the file.
      num_threads, runtime: as in `converters.runtime.load_interpreter`.

    Returns:
      A `Verification`; ``passed`` says whether the target holds (nothing is raised).
    """
    require_tf_keras_model(model, "model")
    loaded, flat = _loaded(tflite, num_threads, runtime)
    if quantization is None:
        if flat is None:
            raise ValueError("pass `quantization=` when `tflite` is an already loaded TFLiteModel")
        quantization = describe_tflite(flat).quantization
    if quantization not in (*TOLERANCES, "int8"):
        raise ValueError(f"`quantization` must be one of {[*TOLERANCES, 'int8']}; received {quantization!r}")
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        raise ValueError("`x` holds no samples")
    expected = np.asarray(model.predict(x, verbose=0, batch_size=256), dtype=np.float32)
    got = loaded.predict(x)
    diff = np.abs(expected.reshape(got.shape) - got)
    agreement = float(np.mean(expected.reshape(got.shape).argmax(-1) == got.argmax(-1)))
    keras_accuracy = tflite_accuracy = None
    if y is not None:
        labels = _labels(y, len(x))
        keras_accuracy = float(np.mean(expected.argmax(-1) == labels))
        tflite_accuracy = float(np.mean(got.argmax(-1) == labels))
    if quantization in TOLERANCES:
        tolerance, relative = TOLERANCES[quantization]
        scale = max(1.0, float(np.abs(expected).max())) if relative else 1.0
        criterion = f"max |diff| <= {tolerance:g}" + (f" x output scale {scale:.3g}" if relative else "")
        passed = float(diff.max()) <= tolerance * scale
        if relative and not passed and _are_logits(expected):
            probs = float(np.abs(_softmax(expected.reshape(got.shape)) - _softmax(got)).max())
            criterion += f", or max |diff| of softmax probabilities {probs:.3g} <= {tolerance:g}"
            passed = probs <= tolerance
    elif keras_accuracy is not None:
        criterion = f"accuracy within {100 * INT8_ACCURACY_DROP:g} point of Keras"
        passed = tflite_accuracy >= keras_accuracy - INT8_ACCURACY_DROP - 1e-12
    else:
        criterion = f"same class as Keras on >= {100 * (1 - INT8_ACCURACY_DROP):g}% of samples"
        passed = agreement >= 1 - INT8_ACCURACY_DROP - 1e-12
    return Verification(quantization, len(x), float(diff.max()), float(diff.mean()), agreement,
                        keras_accuracy, tflite_accuracy, loaded.runtime, criterion, bool(passed))
