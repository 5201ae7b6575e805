"""What the bench's runs share: the record of one model, its files' figures, a model from scratch."""

import numpy as np

__all__ = ["LATENCY_TIMING", "model_record", "add_files", "train", "scratch"]

#: How the files of a run were timed (recorded in each result, quoted by the report).
LATENCY_TIMING = "interleaved per sample"


def _lstm_stats(model):
    """The LSTM's weights, dense and nonzero, with the input factors `tf_vib.lowrank` puts before it."""
    from tf_vib._keras import keras
    from tf_vib.lowrank import factor_layers

    factors = set(factor_layers(model).values())
    dense = nonzero = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.RNN) or layer.name in factors:
            for w in layer.get_weights():
                dense += w.size
                nonzero += int(np.count_nonzero(w))
    return dense, nonzero


def model_record(model, test, seconds, *, val=None, **extra):
    """Sizes, test (and validation) accuracy and wall time of one model: a JSON-ready dict."""
    from tf_vib.cli.deploy import accuracy

    dense, nonzero = _lstm_stats(model)
    scores = {} if val is None else {"val_accuracy": accuracy(model, *val)}
    return {"params": int(model.count_params()), "lstm_params": dense, "lstm_nonzero": nonzero,
            **scores, "keras_accuracy": accuracy(model, *test), "seconds": float(seconds), **extra}


def add_files(runs, figures):
    """Each converted file's figures into ``runs[model]["files"][mode]``."""
    for f in figures:
        runs[f.model].setdefault("files", {})[f.mode] = {
            "bytes": f.file_bytes, "gzip_bytes": f.gzip_bytes, "tflite_accuracy": f.tflite_accuracy,
            "latency_us": f.latency_us, "verified": f.verified, "verification": f.verification, "ops": f.ops,
        }


def train(model, train_data, val, *, epochs, patience=None, teacher=None, distillation=None):
    """Train ``model`` in place, its best validation-accuracy epoch restored; return the epochs run.

    ``patience``: stop after that many epochs without a better validation accuracy (None:
    run every epoch). ``teacher``: learn through ``tf_vib.Distiller`` with ``distillation``
    (``{"alpha", "beta", "temperature"}``), as compress() fine-tunes.
    """
    from tf_vib import Distiller
    from tf_vib._keras import keras

    stop = keras.callbacks.EarlyStopping("val_accuracy", mode="max", restore_best_weights=True,
                                         patience=epochs if patience is None else patience)
    trained = model
    if teacher is not None:
        trained = Distiller(model, teacher, **distillation)
        trained.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    history = trained.fit(*train_data, validation_data=val, epochs=epochs, batch_size=32, verbose=0,
                          callbacks=[stop])
    # The student's variables are the Distiller's: restoring the best epoch restored the model.
    return {"epochs_run": len(history.history.get("loss", [])), "best_epoch": int(stop.best_epoch) + 1}


def scratch(data, train_data, val, *, units, epochs, seed, patience=None, teacher=None, distillation=None):
    """``build_lstm(units)`` trained by `train`: ``(model, training info)``."""
    from tf_vib.cli.demo import build_lstm

    model = build_lstm(data, units=units, seed=seed)
    info = train(model, train_data, val, epochs=epochs, patience=patience, teacher=teacher,
                 distillation=distillation)
    return model, info
