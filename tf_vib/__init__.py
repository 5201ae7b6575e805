"""tf-vib: Variational Information Bottleneck compression for Keras LSTM/GRU models."""

from importlib import metadata as _metadata

from tf_vib import layers

__all__ = ["layers", "__version__"]

try:
    __version__ = _metadata.version("tf-vib")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
