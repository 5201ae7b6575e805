"""tf-vib: Variational Information Bottleneck compression for Keras LSTM/GRU models.

The entry points: `compress` (a trained model in, a plain smaller model and a report out),
`add_vib_masks` and `strip_masks` (the two halves of it, for your own training loop),
`summary` (what a masked model keeps), the stages that follow VIB (`magnitude_prune`,
`cluster`, `distill`, `low_rank`, `ISSPenalty`), and the VIB schedule. The layers are in
`tf_vib.layers`, the offline data sets in `tf_vib.datasets`, size accounting in
`tf_vib.sizes`. Conversion to TFLite is the separate `converters` package.
"""

import importlib as _importlib
from importlib import metadata as _metadata

from tf_vib import datasets, layers, sizes
from tf_vib._deprecated import MOVED_MODULES as _MOVED_MODULES
from tf_vib.compress import (
    BoundNotMetWarning,
    CompressionReport,
    CompressionResult,
    Distiller,
    FreezeZeros,
    ISSPenalty,
    ModelSummary,
    Scorer,
    VIBSchedule,
    VIBScheduleCallback,
    cluster,
    compress,
    distill,
    magnitude_prune,
    summary,
    vib_scope,
)
from tf_vib.lowrank import low_rank
from tf_vib.sizes import clustered_storage
from tf_vib.surgery import kept_input_features, strip_masks
from tf_vib.wrap import add_vib_masks

__all__ = [
    "compress",
    "CompressionResult",
    "CompressionReport",
    "BoundNotMetWarning",
    "Scorer",
    "add_vib_masks",
    "strip_masks",
    "kept_input_features",
    "summary",
    "ModelSummary",
    "magnitude_prune",
    "cluster",
    "distill",
    "Distiller",
    "low_rank",
    "ISSPenalty",
    "FreezeZeros",
    "VIBSchedule",
    "VIBScheduleCallback",
    "vib_scope",
    "clustered_storage",
    "datasets",
    "layers",
    "sizes",
    "__version__",
]


def __getattr__(name):
    # `tf_vib.stages` and the other moved modules still resolve, with a warning (one release).
    if f"tf_vib.{name}" in _MOVED_MODULES:
        return _importlib.import_module(f"tf_vib.{name}")
    raise AttributeError(f"module 'tf_vib' has no attribute {name!r}")


try:
    __version__ = _metadata.version("tf-vib")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
