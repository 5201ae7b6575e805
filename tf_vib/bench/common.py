"""What the bench's runs share: the record of one model, its files' figures, a model from scratch."""

import numpy as np

__all__ = ["LATENCY_TIMING", "model_record", "add_files", "scratch"]

#: How the files of a run were timed (recorded in each result, quoted by the report).
LATENCY_TIMING = "interleaved per sample"


def _lstm_stats(model):
    from tf_vib._keras import keras

    dense = nonzero = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.RNN):
            for w in layer.get_weights():
                dense += w.size
                nonzero += int(np.count_nonzero(w))
    return dense, nonzero


def model_record(model, test, seconds, **extra):
    from tf_vib.cli.deploy import accuracy

    dense, nonzero = _lstm_stats(model)
    return {"params": int(model.count_params()), "lstm_params": dense, "lstm_nonzero": nonzero,
            "keras_accuracy": accuracy(model, *test), "seconds": float(seconds), **extra}


def add_files(runs, figures):
    """Each converted file's figures into ``runs[model]["files"][mode]``."""
    for f in figures:
        runs[f.model].setdefault("files", {})[f.mode] = {
            "bytes": f.file_bytes, "gzip_bytes": f.gzip_bytes, "tflite_accuracy": f.tflite_accuracy,
            "latency_us": f.latency_us, "verified": f.verified, "verification": f.verification, "ops": f.ops,
        }


def scratch(data, train, val, *, units, epochs, seed):
    from tf_vib.cli.demo import build_lstm
    from tf_vib.training import BestWeights

    model = build_lstm(data, units=units, seed=seed)
    keep = BestWeights(lambda e, logs: (logs.get("val_accuracy", 0.0), -logs.get("val_loss", 0.0)))
    model.fit(*train, validation_data=val, epochs=epochs, batch_size=32, verbose=0, callbacks=[keep])
    return model
