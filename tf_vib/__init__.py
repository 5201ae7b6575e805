"""tf-vib: Variational Information Bottleneck compression for Keras LSTM/GRU models."""

from importlib import metadata as _metadata

from tf_vib import layers
from tf_vib.compress import CompressionResult, compress
from tf_vib.compression_report import CompressionReport
from tf_vib.report import ModelSummary, summary
from tf_vib.surgery import kept_input_features, strip_masks
from tf_vib.wrap import add_vib_masks

__all__ = [
    "layers",
    "compress",
    "CompressionResult",
    "CompressionReport",
    "add_vib_masks",
    "strip_masks",
    "kept_input_features",
    "summary",
    "ModelSummary",
    "__version__",
]

try:
    __version__ = _metadata.version("tf-vib")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
