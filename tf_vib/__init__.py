"""tf-vib: Variational Information Bottleneck compression for Keras LSTM/GRU models."""

from importlib import metadata as _metadata

from tf_vib import datasets, layers, lowrank, regularizers, schedules, stages, storage
from tf_vib.compress import CompressionResult, compress
from tf_vib.compression_report import CompressionReport
from tf_vib.lowrank import low_rank
from tf_vib.regularizers import FreezeZeros, ISSPenalty
from tf_vib.report import ModelSummary, summary
from tf_vib.schedules import VIBSchedule, VIBScheduleCallback, vib_scope
from tf_vib.selection import BoundNotMetWarning, Scorer
from tf_vib.stages import Distiller, cluster, distill, magnitude_prune
from tf_vib.storage import clustered_storage
from tf_vib.surgery import kept_input_features, strip_masks
from tf_vib.wrap import add_vib_masks

__all__ = [
    "datasets",
    "layers",
    "lowrank",
    "regularizers",
    "schedules",
    "stages",
    "storage",
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
    "VIBSchedule",
    "VIBScheduleCallback",
    "vib_scope",
    "ISSPenalty",
    "FreezeZeros",
    "low_rank",
    "magnitude_prune",
    "cluster",
    "distill",
    "Distiller",
    "clustered_storage",
    "__version__",
]

try:
    __version__ = _metadata.version("tf-vib")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
