"""compress(checkpoint_dir=...): the run's state saved as it goes, and a killed run resumed.

Everything is kept in TensorFlow's own formats: every ``fit`` (VIB training, each candidate's
fine-tune, the final fine-tune) runs with Keras's ``BackupAndRestore`` (weights, both
optimizers, the epoch), and the state between fits (the VIB model when its training is over,
each snapshot taken as a candidate, each candidate once fine-tuned) is a
``tf.train.Checkpoint`` of the model it belongs to. A JSON manifest beside them lists what is
finished (the stages, the candidates' sizes and scores, the trials' results) and the
fingerprint of the run: the arguments that matter, the seed, and digests of the model (its
config and weights) and of the data. A checkpoint of another run is refused.

Layout of ``checkpoint_dir``::

    manifest.json            fingerprint, finished stages, candidates, trials
    vib/backup/              BackupAndRestore of the VIB (or ISS) training
    vib/candidates/<i>       tf.train.Checkpoint of the VIB model at candidate i
    vib/done/model           tf.train.Checkpoint of the VIB model once its training is over
    trials/<n>/backup/       BackupAndRestore of the n-th candidate fine-tune
    trials/<n>/model         tf.train.Checkpoint of that candidate once fine-tuned
    finetune/backup/         BackupAndRestore of the final fine-tune
"""

import hashlib
import json
import os
import pathlib
import shutil

import numpy as np

from tf_vib._checks import BadArgument
from tf_vib._keras import keras, tf
from tf_vib.compress._stream import Stream
from tf_vib.compress._training import loss_name

__all__ = ["Checkpoints", "run_fingerprint", "fingerprint", "model_digest", "data_digest"]

MANIFEST = "manifest.json"
FORMAT = 1


def _sha(parts):
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode())
    return digest.hexdigest()[:16]


def model_digest(model):
    """A digest of ``model``'s config and weights."""
    return _sha([model.to_json()] + [np.ascontiguousarray(w).tobytes() for w in model.get_weights()])


def data_digest(data):
    """A digest of the training and validation arrays (shapes, dtypes and values); of a
    streamed dataset (`_stream.Stream`), its samples and batches per pass, its element
    spec and the batches checked before training, so that nothing more is read."""
    parts = []
    for part in (data.train, data.val):
        if isinstance(part, Stream):
            parts.append(f"stream {part.num_samples} {part.steps} {part.dataset.element_spec}".encode())
            part = part.sample
        parts += [f"{a.shape}{a.dtype}".encode() + np.ascontiguousarray(a).tobytes() for a in tf.nest.flatten(part)]
    return _sha(parts)


def fingerprint(**arguments):
    """The arguments that decide a run, as JSON-safe values (compared one by one on resume)."""
    def safe(value):
        if isinstance(value, (bool, int, float, str)) or value is None:
            return value
        if isinstance(value, (list, tuple)):
            return [safe(v) for v in value]
        if isinstance(value, dict):
            return {str(k): safe(v) for k, v in sorted(value.items())}
        return repr(value)

    return {name: safe(value) for name, value in sorted(arguments.items())}


def _saved_epoch(backup_dir):
    """The last epoch (0-based) a ``BackupAndRestore`` in ``backup_dir`` saved, or None."""
    latest = tf.train.latest_checkpoint(os.path.join(backup_dir, "chief"))
    if latest is None:
        return None
    epoch = int(tf.train.load_checkpoint(latest).get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    return epoch if epoch >= 0 else None


def run_fingerprint(spec):
    """`fingerprint` of a `compress._run.RunSpec`: what decides the run, verbosity aside."""
    return fingerprint(
        model=model_digest(spec.model), data=data_digest(spec.data),
        **{k: v for k, v in spec.settings.items() if k != "verbose"}, thresholds=spec.thresholds, vib=spec.vib,
        metric=spec.scorer.name, loss=loss_name(spec.loss), kl_mults=spec.kl_mults, masked_gates=spec.masked_gates,
        seed=spec.seed, frame_masks=spec.frame_masks)


class Checkpoints:
    """One run's ``checkpoint_dir``: its manifest and the TensorFlow checkpoints beside it.

    Args:
      path: the checked folder (`tf_vib._checks.check_checkpoint_dir`).
      arguments: `fingerprint` of the run; a manifest holding another is refused.
      log: a callable for the stage lines saying what is resumed.
    """

    def __init__(self, path, arguments, log):
        self.path = pathlib.Path(path)
        self.log = log
        self.trial_count = 0
        manifest = self.path / MANIFEST
        if manifest.exists():
            try:
                self.manifest = json.loads(manifest.read_text())
            except (OSError, ValueError) as error:
                raise BadArgument(f"`checkpoint_dir` {str(self.path)!r} holds an unreadable {MANIFEST} "
                                  f"({error}): pass a new or empty folder to start afresh") from None
            self._refuse_other(arguments)
        else:
            if self.path.exists() and any(self.path.iterdir()):
                raise BadArgument(f"`checkpoint_dir` {str(self.path)!r} is not empty and holds no compress() "
                                  f"checkpoint ({MANIFEST}): pass a new or empty folder")
            self.manifest = {"format": FORMAT, "arguments": arguments, "stages": {}, "trials": []}
            self.save()

    def _refuse_other(self, arguments):
        stored = self.manifest.get("arguments", {})
        differ = [name for name in sorted(set(stored) | set(arguments)) if stored.get(name) != arguments.get(name)]
        if not differ:
            return
        shown = "; ".join(
            "the model (its config or weights)" if name == "model" else
            "the data (training or validation arrays)" if name == "data" else
            f"{name}={arguments.get(name)!r} (the checkpoint's run had {stored.get(name)!r})"
            for name in differ)
        raise BadArgument(f"`checkpoint_dir` {str(self.path)!r} holds a checkpoint of a different run: {shown} "
                          f"differ. Call compress() with that run's model, data and arguments to resume it, "
                          f"or pass a new (or empty) checkpoint_dir to start afresh")

    def save(self):
        self.path.mkdir(parents=True, exist_ok=True)
        temporary = self.path / (MANIFEST + ".tmp")
        temporary.write_text(json.dumps(self.manifest, indent=1))
        os.replace(temporary, self.path / MANIFEST)

    def stage(self, name):
        return self.manifest["stages"].setdefault(name, {})

    # -- VIB / ISS training ----------------------------------------------------------------

    def vib_callback(self, name, snapshots, epochs, steps, schedule_callback):
        """The callback that backs up VIB training, and the epoch to start from (0 when new).

        It restores the candidates taken before a kill into ``snapshots`` and sets the
        schedule's step to where the run was."""
        from tf_vib.compress._candidates import Candidate

        stage = self.stage(name)
        backup = str(self.path / "vib" / "backup")
        saved = _saved_epoch(backup)
        start = 0 if saved is None else saved + 1
        # a candidate saved after the last backup is taken again when its epoch reruns
        stage["candidates"] = [row for row in stage.get("candidates", []) if row["epoch"] < start]
        for row in stage["candidates"]:
            snapshots.candidates.append(Candidate.from_record(row, self._read(snapshots.vib_model, row["path"])))
        if snapshots.candidates:
            snapshots._kept = sum(int(m.kept(snapshots.threshold).sum()) for m in snapshots._masks)
        if start:
            self.log(f"resuming {name.upper()} stage at epoch {start + 1} of {epochs} "
                     f"({len(snapshots.candidates)} candidates kept)")
        schedule_callback.step.assign(start * steps)
        return _VIBBackup(self, name, snapshots, backup), start

    def candidate_saved(self, name, snapshots, index):
        candidate = snapshots.candidates[index]
        path = f"vib/candidates/{index}"
        tf.train.Checkpoint(model=snapshots.vib_model).write(str(self.path / path))
        row = {"epoch": int(candidate.epoch), "threshold": float(candidate.threshold),
               "params": int(candidate.params), "masked_accuracy": float(candidate.masked_accuracy), "path": path,
               "frames": candidate.frames}
        self.stage(name).setdefault("candidates", []).append(row)
        self.save()

    def vib_done(self, name, vib_model, history):
        """Asking (``history`` None): whether the VIB training is over. Else: record it as over."""
        stage = self.stage(name)
        if history is None:  # asking
            if not stage.get("done"):
                return False
            self.log(f"resuming after the {name.upper()} stage (finished, {len(stage.get('candidates', []))} "
                     "candidates)")
            return True
        stage["path"] = "vib/done/model"
        tf.train.Checkpoint(model=vib_model).write(str(self.path / stage["path"]))
        stage["done"], stage["history"] = True, _jsonable(history)
        self.save()
        shutil.rmtree(self.path / "vib" / "backup", ignore_errors=True)  # kept until the stage is recorded
        return True

    def history(self, name):
        return self.stage(name).get("history")

    # -- candidate fine-tunes --------------------------------------------------------------

    def trial(self, plain, tune, epochs):
        """``tune(callbacks) -> (score, epochs run)`` for the next trial, or its recorded result."""
        index, self.trial_count = self.trial_count, self.trial_count + 1
        trials = self.manifest["trials"]
        if index < len(trials):
            row = trials[index]
            self._read_into(plain, row["path"])
            return row["score"], row["epochs"]
        backup = str(self.path / "trials" / str(index) / "backup")
        saved = _saved_epoch(backup)
        if saved is not None:
            self.log(f"resuming candidate fine-tune {index + 1} at epoch {saved + 2} of {epochs}")
        score, run = tune([keras.callbacks.BackupAndRestore(backup)])
        path = f"trials/{index}/model"
        tf.train.Checkpoint(model=plain).write(str(self.path / path))
        trials.append({"score": float(score), "epochs": int(run), "path": path})
        self.save()
        return score, run

    def finetune_callbacks(self, epochs):
        backup = str(self.path / "finetune" / "backup")
        saved = _saved_epoch(backup)
        if saved is not None:
            self.log(f"resuming the final fine-tune at epoch {saved + 2} of {epochs}")
        return [keras.callbacks.BackupAndRestore(backup)]

    # --------------------------------------------------------------------------------------

    def _read(self, model, path):
        self._read_into(model, path)
        return [w.copy() for w in model.get_weights()]

    def _read_into(self, model, path):
        tf.train.Checkpoint(model=model).read(str(self.path / path)).assert_existing_objects_matched()


def _jsonable(history):
    return {k: [float(v) for v in values] for k, values in (history or {}).items()}


class _VIBBackup(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` of the VIB training that also keeps the candidates: at each
    epoch's end the snapshot (if one is due) is taken and saved before the backup, so that a
    backup never runs ahead of the candidates saved."""

    def __init__(self, checkpoints, name, snapshots, backup_dir):
        super().__init__(backup_dir, delete_checkpoint=False)  # deleted once the stage is recorded
        self.checkpoints, self.name, self.snapshots = checkpoints, name, snapshots

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)  # restores the weights, both optimizers and the epoch
        self.snapshots.on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        before = len(self.snapshots.candidates)
        self.snapshots.on_epoch_end(epoch, logs)
        for index in range(before, len(self.snapshots.candidates)):
            self.checkpoints.candidate_saved(self.name, self.snapshots, index)
        super().on_epoch_end(epoch, logs)
