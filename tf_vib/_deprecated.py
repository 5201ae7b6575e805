"""The deprecation path for public names that moved: the old name works for one release
and warns, naming the new one."""

import importlib
import warnings

#: Old public module -> (the modules that now hold its names, where a user should import from).
MOVED_MODULES = {
    "tf_vib.regularizers": (("tf_vib.compress._iss",), "tf_vib (ISSPenalty, FreezeZeros)"),
    "tf_vib.schedules": (("tf_vib.compress._schedules",),
                         "tf_vib (VIBSchedule, VIBScheduleCallback, vib_scope)"),
    "tf_vib.stages": (("tf_vib.compress._pruning", "tf_vib.compress._finetune"),
                      "tf_vib (magnitude_prune, cluster, distill, Distiller)"),
    "tf_vib.storage": (("tf_vib.sizes",), "tf_vib.sizes"),
}

#: The release that removes the old names.
REMOVED_IN = "0.3"


def moved_names(old):
    """Warn that module ``old`` moved; return its public names, from where they live now."""
    targets, advice = MOVED_MODULES[old]
    warnings.warn(
        f"`{old}` is deprecated and will be removed in tf-vib {REMOVED_IN}; import from {advice}",
        FutureWarning,
        stacklevel=3,
    )
    modules = [importlib.import_module(target) for target in targets]
    return {name: getattr(module, name) for module in modules for name in module.__all__}
