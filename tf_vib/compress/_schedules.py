"""One schedule for VIB training: KL warm-up, mask hardening, and a tfmot pruning schedule.

``VIBSchedule`` is a ``tfmot.sparsity.keras.PruningSchedule`` (so ``prune_low_magnitude``
accepts it and a pruned model saves it in its config) that also says how the VIB loss
evolves: the KL weight of ``loss = cross_entropy + kl_weight * sum(kl_mult * KL)``
(docs/method.md section 1.2) ramps from 0 to ``kl_factor``, and at ``harden_step`` the pruned
masks are frozen at zero so that fine-tuning adapts to the final structure.
``VIBScheduleCallback`` applies it to a model during ``fit``.
"""

import contextlib

import numpy as np
import tensorflow_model_optimization as tfmot

from tf_vib._checks import check_float, check_int
from tf_vib._keras import keras, tf
from tf_vib.layers.base import VIBLayerMixin

__all__ = ["VIBSchedule", "VIBScheduleCallback", "custom_objects", "vib_scope", "vib_layers"]

_LOG_EPS = float(np.log(1e-8))  # GaussianMask.log_alpha adds 1e-8 to mu^2


@keras.utils.register_keras_serializable(package="tf_vib")
class VIBSchedule(tfmot.sparsity.keras.PruningSchedule):
    """KL warm-up, hardening step and expected pruned fraction of a VIB training run.

    KL weight (the factor of the VIB loss, docs/method.md section 1.4)::

        kl_weight(step) = kl_factor * clip((step - begin_step) / warmup_steps, 0, 1)

    (``kl_factor`` from ``begin_step`` on when ``warmup_steps`` is 0; 0 before it). As a
    tfmot pruning schedule, ``schedule(step)`` returns ``(should_prune, sparsity)`` with
    graph-safe ops: ``should_prune`` every ``frequency`` steps in ``[begin_step, end_step]``
    (``end_step=-1``: forever), and the sparsity follows tfmot's ``PolynomialDecay``
    (power 3) from 0 at ``begin_step`` to ``target_pruned_fraction`` at the ramp end::

        sparsity = target * (1 - (1 - p) ** 3),   p = clip((step - begin) / (ramp_end - begin), 0, 1)

    where ``ramp_end`` is ``harden_step`` (the structure is final there), else ``end_step``;
    with neither, the sparsity is the target from ``begin_step`` on.

    Args:
      kl_factor: float >= 0, the final KL weight (reference 1e-6 .. 3e-5 per sample).
      warmup_steps: int >= 0, default 0. Steps of the linear KL ramp after ``begin_step``.
      harden_step: int >= begin_step or None (default: never). Step at which
        ``VIBScheduleCallback`` freezes the pruned masks at zero.
      target_pruned_fraction: float in [0, 1), default 0.9. Fraction of units (or, for
        magnitude pruning, weights) expected to be pruned by the end of the ramp.
      begin_step: int >= 0, default 0.
      end_step: int >= begin_step, or -1 (default) for no end.
      frequency: int >= 1, default 100. Prune every ``frequency`` steps.

    Example:

    >>> schedule = VIBSchedule(0.5, warmup_steps=100, harden_step=500)
    >>> float(schedule.kl_weight(50))
    0.25
    """

    def __init__(
        self,
        kl_factor,
        *,
        warmup_steps=0,
        harden_step=None,
        target_pruned_fraction=0.9,
        begin_step=0,
        end_step=-1,
        frequency=100,
    ):
        self.kl_factor = check_float("kl_factor", kl_factor, allow_low=True)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, 0)
        self.begin_step = check_int("begin_step", begin_step, 0)
        self.end_step = check_int("end_step", end_step, self.begin_step, allow=(-1,))
        self.harden_step = (
            None if harden_step is None
            else check_int("harden_step", harden_step, self.begin_step)
        )
        self.target_pruned_fraction = check_float(
            "target_pruned_fraction", target_pruned_fraction, allow_low=True, high=1.0
        )
        self.frequency = check_int("frequency", frequency, 1)

    @property
    def ramp_end(self):
        """Step at which the sparsity reaches the target (None: constant target)."""
        if self.harden_step is not None:
            return self.harden_step
        return None if self.end_step < 0 else self.end_step

    def kl_weight(self, step):
        """The KL weight at ``step`` (int or integer tensor), as a float32 scalar tensor."""
        step = tf.cast(step, tf.float32)
        begin = float(self.begin_step)
        if self.warmup_steps == 0:
            ramp = tf.cast(step >= begin, tf.float32)
        else:
            ramp = tf.clip_by_value((step - begin) / float(self.warmup_steps), 0.0, 1.0)
        return tf.constant(self.kl_factor, tf.float32) * ramp

    def sparsity(self, step):
        """The expected pruned fraction at ``step``, as a float32 scalar tensor."""
        step = tf.cast(step, tf.float32)
        target = tf.constant(self.target_pruned_fraction, tf.float32)
        end = self.ramp_end
        if end is None or end == self.begin_step:
            return tf.where(step >= float(self.begin_step), target, 0.0)
        p = tf.clip_by_value((step - self.begin_step) / float(end - self.begin_step), 0.0, 1.0)
        return target * (1.0 - tf.pow(1.0 - p, 3.0))

    def __call__(self, step):
        should_prune = self._should_prune_in_step(
            step, self.begin_step, self.end_step, self.frequency
        )
        return should_prune, self.sparsity(step)

    def _arguments(self):
        return {
            "kl_factor": self.kl_factor,
            "warmup_steps": self.warmup_steps,
            "harden_step": self.harden_step,
            "target_pruned_fraction": self.target_pruned_fraction,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }

    def get_config(self):
        """tfmot's schedule format ``{"class_name", "config"}``, which ``from_config`` reads.

        The class name is the registered ``"tf_vib>VIBSchedule"``, so a pruning wrapper
        holding this schedule deserializes once ``tf_vib`` is imported.
        """
        return {
            "class_name": keras.utils.get_registered_name(type(self)),
            "config": self._arguments(),
        }

    @classmethod
    def from_config(cls, config):
        """Accepts ``get_config()`` output or its inner ``"config"`` dict (what Keras passes)."""
        if not isinstance(config, dict):
            raise TypeError(f"`config` must be a dict; received {config!r}")
        if "config" in config and "class_name" in config:
            config = config["config"]
        return cls(**config)

    def __eq__(self, other):
        return type(other) is type(self) and other._arguments() == self._arguments()

    def __hash__(self):
        return hash(tuple(self._arguments().items()))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._arguments().items())
        return f"VIBSchedule({args})"


def vib_layers(model):
    """Every VIB layer of ``model`` (each once), found through RNN cells, wrappers and nested models."""
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"`model` must be a tf_keras Model or Layer; received {model!r:.80}")
    found, seen = [], set()
    stack = [model]
    while stack:
        layer = stack.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, VIBLayerMixin):
            found.append(layer)
        stack.extend(_children(layer))
    return found


def _children(layer):
    # Explicit walk: tf.Module.submodules trips over the cells' noise caches.
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    if isinstance(layer, keras.layers.Bidirectional):
        return [layer.forward_layer, layer.backward_layer]
    if isinstance(layer, keras.layers.Wrapper):  # tfmot's pruning and clustering wrappers
        return [layer.layer]
    if isinstance(layer, keras.layers.StackedRNNCells):
        return list(layer.cells)
    cell = getattr(layer, "cell", None)
    return [cell] if isinstance(layer, keras.layers.RNN) and cell is not None else []


class VIBScheduleCallback(keras.callbacks.Callback):
    """Drives VIB training from a ``VIBSchedule`` during ``fit``.

    Before each training batch it sets every VIB layer's ``kl_weight`` variable to
    ``schedule.kl_weight(step)`` (so the layers' ``kl_mult`` keep their ratios). Once
    ``harden_step`` batches are done, it hardens the masks: every unit whose
    ``log_alpha >= keep_threshold`` gets ``mu = 0`` and the smallest ``log_sigma2`` that
    keeps it pruned (``keep_threshold + 1 + log(1e-8)``, noise std about 1.6e-4, KL 0),
    and these values are restored after every later batch, so the rest of training
    fine-tunes the final structure. The step lives in the variable ``step`` and
    continues across ``fit`` calls; ``logs["kl_weight"]`` reports the weight per epoch.

    Args:
      schedule: a ``VIBSchedule``.
      initial_step: int >= 0, default 0: the step to resume from.

    Example:

    >>> callback = VIBScheduleCallback(VIBSchedule(1e-4, warmup_steps=200))
    >>> int(callback.step)
    0
    """

    def __init__(self, schedule, *, initial_step=0):
        if not isinstance(schedule, VIBSchedule):
            raise TypeError(
                f"`schedule` must be a tf_vib.VIBSchedule; received {schedule!r:.80}"
            )
        super().__init__()
        self._supports_tf_logs = True  # the batch hooks never read the logs: no sync per batch
        self.schedule = schedule
        self.step = tf.Variable(
            check_int("initial_step", initial_step, 0), dtype=tf.int64, trainable=False
        )
        self.hardened = None  # [(mask, float keep vector, log_sigma2 for pruned units)]
        self._layers = []

    def on_train_begin(self, logs=None):
        self._layers = vib_layers(self.model)
        if not self._layers:
            raise ValueError(
                f"VIBScheduleCallback found no VIB layer in model {self.model.name!r}: it needs "
                "FeatureMask or RNN(VIBLSTMCell/VIBGRUCell) layers (also inside tfmot wrappers)"
            )
        # A Python mirror of ``step`` and of the last weight assigned: once the warm-up is
        # over a batch costs no TensorFlow op here but the step increment.
        self._step = int(self.step.numpy())  # .numpy(): a MirroredVariable under a strategy has no int()
        self._assigned = None
        harden_step = self.schedule.harden_step
        if self.hardened is None and harden_step is not None and self._step >= harden_step:
            self.harden()
        self._reapply_hardening()

    def _weight_at(self, step):
        schedule = self.schedule
        if step >= schedule.begin_step + schedule.warmup_steps:
            return schedule.kl_factor
        return float(schedule.kl_weight(step))

    def on_train_batch_begin(self, batch, logs=None):
        weight = self._weight_at(self._step)
        if weight != self._assigned:
            for layer in self._layers:
                layer.kl_weight.assign(weight)
            self._assigned = weight

    def on_train_batch_end(self, batch, logs=None):
        self.step.assign_add(1)
        self._step += 1
        harden_step = self.schedule.harden_step
        if self.hardened is None and harden_step is not None and self._step >= harden_step:
            self.harden()
        self._reapply_hardening()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["kl_weight"] = float(self.schedule.kl_weight(tf.maximum(self.step - 1, 0)))

    def harden(self):
        """Freeze the currently pruned units of every mask at zero (see the class docstring)."""
        self.hardened = []
        for layer in self._layers or vib_layers(self.model):
            for mask in layer.vib_masks.values():
                keep = mask.kept().astype(np.float32)
                floor = mask.settings.keep_threshold + 1.0 + _LOG_EPS
                self.hardened.append((mask, keep, np.float32(floor)))
        self._reapply_hardening()

    def _reapply_hardening(self):
        for mask, keep, floor in self.hardened or ():
            mask.mu.assign(mask.mu * keep)
            mask.log_sigma2.assign(tf.where(keep > 0, mask.log_sigma2, floor))


def custom_objects():
    """tf_vib's serializable classes by short and registered name (``VIBSchedule``, layers...)."""
    objects = {}
    for name, obj in keras.utils.get_custom_objects().items():
        if name.startswith("tf_vib>"):
            objects[name] = obj
            objects[name.split(">", 1)[1]] = obj
    return objects


@contextlib.contextmanager
def vib_scope():
    """``tfmot.sparsity.keras.prune_scope()`` plus tf_vib's objects, to load any tf_vib model.

    Example: a model saved in the middle of magnitude pruning (tfmot wrappers around a VIB
    layer) loads back inside the scope.

    >>> import pathlib, tempfile
    >>> model = keras.Sequential([keras.Input((4, 2)), keras.layers.RNN(tf_vib.layers.VIBLSTMCell(3)),
    ...                           keras.layers.Dense(2)])
    >>> pruned = tfmot.sparsity.keras.prune_low_magnitude(model)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "pruned.keras"
    >>> pruned.save(path)
    >>> with vib_scope():
    ...     loaded = keras.models.load_model(path)
    >>> type(loaded.layers[0]).__name__, type(loaded.layers[0].layer.cell).__name__
    ('PruneLowMagnitude', 'VIBLSTMCell')
    """
    with tfmot.sparsity.keras.prune_scope(), keras.utils.custom_object_scope(custom_objects()):
        yield
