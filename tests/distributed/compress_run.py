"""compress() runs in their own process, for tests/test_distribute.py: devices and strategies
are fixed before TensorFlow starts, so each setting needs a fresh process.

    python compress_run.py local OUT.json    # one device, MirroredStrategy over 2 logical
                                             # CPUs, compress() called inside its scope, and
                                             # a streamed tf.data.Dataset under the strategy
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


SETTINGS = dict(epochs=6, finetune_epochs=2, batch_size=32, verbose=0, on_miss="best", seed=0, kl_factor=0.05)


def _summary(result, strategy):
    return {"units": int(result.model.layers[0].units), "val_score": float(result.report.stages[-1].val_score),
            "replicas": int(strategy.num_replicas_in_sync)}


def main(mode, out):
    import tf_vib

    runs = {}
    if mode == "local":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        model, x, y = _problem()
        runs["single"] = _summary(tf_vib.compress(model, (x, y), **SETTINGS), tf.distribute.get_strategy())
        runs["mirrored"] = _summary(tf_vib.compress(model, (x, y), strategy=mirrored, **SETTINGS), mirrored)
        with mirrored.scope():
            runs["in_scope"] = _summary(tf_vib.compress(model, (x, y), **SETTINGS), mirrored)
        # a streamed dataset under the strategy: its evaluation (predict_on_batch) exact
        train, val = (tf.data.Dataset.from_tensor_slices(part).batch(32) for part in ((x[:128], y[:128]), (x[128:], y[128:])))
        streamed = tf_vib.compress(model, train, validation_data=val, strategy=mirrored, **SETTINGS)
        runs["streamed"] = {**_summary(streamed, mirrored), "baseline": streamed.report.baseline.val_score,
                            "expected_baseline": float((model.predict(x[128:], verbose=0).argmax(-1) == y[128:]).mean())}
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        model, x, y = _problem()
        runs["worker"] = _summary(tf_vib.compress(model, (x, y), strategy=strategy, **SETTINGS), strategy)
    with open(out, "w") as f:
        json.dump(runs, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
