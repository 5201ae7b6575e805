"""One compress() run in its own process, for tests/test_resume.py (which SIGKILLs it):

    python resume_run.py OUT.json CHECKPOINT_DIR|- '{"extra": "kwargs"}'

With RESUME_MIRRORED set, compress() runs under a MirroredStrategy over 2 logical CPUs.
With RESUME_SLOW set, every VIB epoch and every fine-tune epoch of this process sleeps that
many seconds, so that the test can kill it while a given fit runs (a hook of this script
only; the library has none). Exit code 3: compress() refused the arguments (message on stdout).
"""

import json
import os
import sys
import time


def _problem():
    from compress_run import _problem as trained  # the script's folder is on sys.path

    return trained(samples=120, units=12)


# kl_factor and fine-tune rate at which this small problem prunes (its input features too) and
# fine-tunes back: at kl_factor 0.3 and the default fine-tune rate every pruned candidate
# stayed near chance and the full model came back, which made the structure check weak
SETTINGS = dict(epochs=10, finetune_epochs=3, batch_size=32, verbose=2, on_miss="best", seed=0, kl_factor=0.1,
                mask_learning_rate=0.05, warmup_epochs=1, distill=False, finetune_learning_rate=0.01)


def _slow(seconds):
    from tf_vib.compress import _candidates, _schedules

    for cls in (_schedules.VIBScheduleCallback, _candidates.StopAtScore):
        original = cls.on_epoch_end

        def on_epoch_end(self, epoch, logs=None, _original=original):
            _original(self, epoch, logs)
            time.sleep(seconds)

        cls.on_epoch_end = on_epoch_end


def main(out, checkpoint_dir, extra):
    import tf_vib
    from tf_vib._checks import BadArgument

    if os.environ.get("RESUME_SLOW"):
        _slow(float(os.environ["RESUME_SLOW"]))
    kwargs = {**SETTINGS, **json.loads(extra)}
    if os.environ.get("RESUME_MIRRORED"):  # MirroredStrategy over 2 logical CPUs
        from tf_vib._keras import tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        kwargs["strategy"] = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        print(f"replicas: {kwargs['strategy'].num_replicas_in_sync}", flush=True)
    model, x, y = _problem()
    if checkpoint_dir != "-":
        kwargs["checkpoint_dir"] = checkpoint_dir
    try:
        result = tf_vib.compress(model, (x, y), **kwargs)
    except BadArgument as error:
        print(f"refused: {error}", flush=True)
        sys.exit(3)
    structure = [(layer.__class__.__name__, int(getattr(layer, "units", 0)), int(layer.input_shape[-1]))
                 for layer in result.model.layers]
    with open(out, "w") as f:
        json.dump({"structure": structure, "val_score": float(result.report.stages[-1].val_score),
                   "n_val": 24}, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
