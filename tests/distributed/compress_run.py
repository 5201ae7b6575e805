"""compress() runs in their own process, for tests/test_distribute.py: devices and strategies
are fixed before TensorFlow starts, so each setting needs a fresh process.

    python compress_run.py local OUT.json    # one device, MirroredStrategy over 2 logical
                                             # CPUs, and compress() called inside its scope on
                                             # a streamed tf.data.Dataset through every stage (VIB with ISS, fine-tunes,
                                             # distillation, magnitude pruning, clustering)
    python compress_run.py worker OUT.json   # one worker of a MultiWorkerMirroredStrategy
                                             # (TF_CONFIG set by the caller)
"""

import json
import sys

from tf_vib._keras import keras, tf


def _problem(samples=160, units=16):
    """A trained LSTM classifier and its data (also resume_run.py's)."""
    import numpy as np

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, 6, 4)).astype("float32")
    y = (x[:, :, 0].mean(axis=1) > 0).astype("int32")
    model = keras.Sequential([keras.Input((6, 4)), keras.layers.LSTM(units), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=5, verbose=0)
    return model, x, y


# mask and fine-tune rates at which this small problem prunes (16 -> 12 units) and fine-tunes back
SETTINGS = dict(epochs=6, finetune_epochs=2, batch_size=32, verbose=0, on_miss="best", seed=0, kl_factor=0.05,
                mask_learning_rate=0.05, finetune_learning_rate=0.01)


#: The stages the streamed run adds: ISS beside the VIB masks, tfmot pruning and clustering.
STAGES = dict(iss=1e-3, magnitude_sparsity=0.5, clusters=4)


def _summary(result, strategy):
    return {"units": int(result.model.layers[0].units), "val_score": float(result.report.stages[-1].val_score),
            "replicas": int(strategy.num_replicas_in_sync)}


def _record_fits():
    """Every Keras ``fit`` of this process, as it starts: what trains (the VIB trainer, a
    Distiller, a model wrapped for tfmot pruning or clustering, a plain model) and the
    replicas of the strategy the trained model was created under (a hook of this script)."""
    fits = []
    original = keras.Model.fit

    def fit(self, *args, **kwargs):
        student = getattr(self, "student", self)
        names = [layer.name for layer in getattr(student, "layers", [])]
        kind = ("vib" if type(self).__name__ == "TwoRateTrainer" else
                "prune" if any(n.startswith("prune_low_magnitude") for n in names) else
                "cluster" if any(n.startswith("cluster_") for n in names) else "tune")
        fits.append({"kind": kind, "distilled": student is not self,
                     "replicas": int(self.distribute_strategy.num_replicas_in_sync)})
        return original(self, *args, **kwargs)

    keras.Model.fit = fit
    return fits


def main(mode, out):
    import numpy as np

    import tf_vib

    runs = {}
    if mode == "local":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        model, x, y = _problem()
        runs["single"] = _summary(tf_vib.compress(model, (x, y), **SETTINGS), tf.distribute.get_strategy())
        runs["mirrored"] = _summary(tf_vib.compress(model, (x, y), strategy=mirrored, **SETTINGS), mirrored)
        # inside the strategy's scope, a streamed dataset through every stage: its evaluation
        # exact, every fit under the strategy
        train, val = (tf.data.Dataset.from_tensor_slices(part).batch(32) for part in ((x[:128], y[:128]), (x[128:], y[128:])))
        fits = _record_fits()
        with mirrored.scope():
            streamed = tf_vib.compress(model, train, validation_data=val, **{**SETTINGS, **STAGES})
        stages = {stage.stage: stage for stage in streamed.report.stages}
        kernels = [w.numpy() for w in streamed.model.weights if "kernel" in w.name]
        runs["streamed"] = {
            **_summary(streamed, mirrored), "baseline": streamed.report.baseline.val_score,
            "expected_baseline": float((model.predict(x[128:], verbose=0).argmax(-1) == y[128:]).mean()),
            "stages": list(stages), "fits": fits,
            "pruned_nonzero": stages["magnitude"].extra["nonzero_params"], "params": stages["magnitude"].params,
            "distinct_kernel_values": max(int(np.unique(k[k != 0]).size) for k in kernels),
            "mirrored_weights": all(len(getattr(w, "values", ())) == 2 for w in streamed.model.weights)}
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        model, x, y = _problem()
        runs["worker"] = _summary(tf_vib.compress(model, (x, y), strategy=strategy, **SETTINGS), strategy)
    with open(out, "w") as f:
        json.dump(runs, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
