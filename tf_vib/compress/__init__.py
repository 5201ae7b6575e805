"""compress(): from a trained Keras model to a small plain one, with a report.

The package holds every stage of the pipeline; its modules are private, and this file
exports what a user calls:

- `compress`, `CompressionResult`, `CompressionReport`, `BoundNotMetWarning`: the entry
  point (``_core``), the bound and its metric (``_scorer``), the report (``_report``);
- `summary`, `ModelSummary`: the units a masked model keeps (``_summary``);
- `magnitude_prune`, `cluster` (tfmot, ``_pruning``), `distill`, `Distiller` (``_finetune``),
  `ISSPenalty`, `FreezeZeros` (ISS group lasso, ``_iss``), `VIBSchedule`,
  `VIBScheduleCallback`, `vib_scope` (``_schedules``): the stages, usable on their own.

Data checks live in ``_data`` and argument checks in ``_checks``; both run before any
training.
"""

from tf_vib.compress._core import compress
from tf_vib.compress._defaults import UNIT_MULTIPLE
from tf_vib.compress._finetune import Distiller, distill
from tf_vib.compress._iss import FreezeZeros, ISSPenalty
from tf_vib.compress._pruning import cluster, magnitude_prune
from tf_vib.compress._report import CompressionReport, CompressionResult
from tf_vib.compress._schedules import VIBSchedule, VIBScheduleCallback, vib_scope
from tf_vib.compress._scorer import BoundNotMetWarning, Scorer
from tf_vib.compress._summary import ModelSummary, summary

__all__ = [
    "compress",
    "CompressionResult",
    "CompressionReport",
    "BoundNotMetWarning",
    "Scorer",
    "UNIT_MULTIPLE",
    "summary",
    "ModelSummary",
    "magnitude_prune",
    "cluster",
    "distill",
    "Distiller",
    "ISSPenalty",
    "FreezeZeros",
    "VIBSchedule",
    "VIBScheduleCallback",
    "vib_scope",
]
