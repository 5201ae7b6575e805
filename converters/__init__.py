"""converters: the deployment side of tf-vib. Keras model -> verified, quantized TFLite.

- `to_tflite` / `save_tflite` / `to_tflite_many`: strip VIB masks, convert (float32,
  dynamic-range, float16, full int8, or ``auto``: int8 or float32 per layer, with a
  verify-aware fallback) in a child process, run the first invoke there.
- `describe_tflite`: ops and their versions, tensors, quantization, which runtimes load it.
- `verify` / `evaluate_tflite`: Keras against TFLite, and accuracy on data.
- `load_interpreter` / `measure_latency` (`converters.runtime`, NumPy-only: the file the
  Raspberry Pi runner is made of); `compare_latency` (`converters.latency`) times files side
  by side on the host.
- `to_c_array`: a C header for microcontroller builds.
- `to_tflite(model, streaming=True)`: one frame per invoke, the recurrent states as inputs
  and outputs (`converters.streaming`); `verify_streaming` checks it over whole clips.
"""

from converters._fallback import FALLBACK_MIN_SAMPLES, FallbackWarning
from converters.c_array import to_c_array
from converters.describe import RUNTIME_TARGETS, TFLiteInfo, describe_tflite
from converters.latency import compare_latency
from converters.plan import LayerPlan
from converters.runtime import (
    Latency,
    TFLiteModel,
    load_interpreter,
    measure_latency,
)
from converters.streaming import StreamingSignature, step_model, verify_streaming
from converters.tflite import (
    QUANTIZATIONS,
    RECURRENT_PLANS,
    ConversionCrash,
    ConversionError,
    save_tflite,
    to_tflite,
    to_tflite_many,
)
from converters.verify import (
    INT8_ACCURACY_DROP,
    INT8_VARIANCE_SHARE,
    TOLERANCES,
    Verification,
    evaluate_tflite,
    output_tasks,
    verify,
)

__all__ = [
    "QUANTIZATIONS",
    "RECURRENT_PLANS",
    "RUNTIME_TARGETS",
    "TOLERANCES",
    "INT8_ACCURACY_DROP",
    "FALLBACK_MIN_SAMPLES",
    "FallbackWarning",
    "INT8_VARIANCE_SHARE",
    "ConversionError",
    "ConversionCrash",
    "LayerPlan",
    "Latency",
    "TFLiteInfo",
    "TFLiteModel",
    "Verification",
    "compare_latency",
    "describe_tflite",
    "evaluate_tflite",
    "output_tasks",
    "load_interpreter",
    "measure_latency",
    "save_tflite",
    "to_c_array",
    "to_tflite",
    "to_tflite_many",
    "verify",
    "verify_streaming",
    "step_model",
    "StreamingSignature",
]
