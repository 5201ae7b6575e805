"""The paper-sized setting: per-frame 2048-d CNN features, ``LSTM(2048)``, 8 frames per clip.

The VIB-LSTM paper compressed a CNN-LSTM whose LSTM(2048) read 2048-d Inception-v3 features
(33.6M LSTM parameters) down to about 2,000 parameters. ImageNet weights are not available
offline, and a randomly initialised Inception-v3 gives features that barely separate the
motions, nor does training the CNN end to end inside a small CNN-LSTM (both measured in
docs/paper_size.md). So the extractor
is pretrained the way ImageNet pretraining serves action recognition, on what a frame shows:
a ``keras.applications`` InceptionV3 (random initialisation, 75x75 input, average pooling:
2048 features per frame) with a linear head learns to regress the moving shape's position,
size and angle (`render_clips(return_states=True)`) in single frames of its own pretraining
corpus (independent frames rendered with another seed, none of them from the action clips),
and is then frozen. Its features feed the paper-sized
``LSTM(2048) -> Dense`` baseline, which ``tf_vib.compress`` compresses. Test clips are never
used for training or for any choice.
"""

import dataclasses
import json
import pathlib
import time

import numpy as np

__all__ = ["ENCODER", "paper_clips", "paper_features", "run_paper"]

#: How the clips and the frame encoder are made.
ENCODER = {"clips_per_class": 32, "frames": 8, "size": 75, "backbone": "inception_v3",
           "pretraining_frames": 4000, "encoder_epochs": 12, "batch_frames": 32, "learning_rate": 1e-3}


def paper_clips(seed=0):
    """The action clips: 7 motions, `ENCODER` sizes, a stratified 75/25 train/test split."""
    from tf_vib import datasets

    return datasets.synthetic_actions(ENCODER["clips_per_class"], frames=ENCODER["frames"],
                                      size=ENCODER["size"], seed=seed)


def pretraining_frames(count, seed):
    """``(frames, states)``: independent single frames of every motion, for the encoder."""
    from tf_vib import datasets

    labels = np.random.default_rng(seed).integers(0, len(datasets.DEFAULT_MOTIONS), count)
    frames, states = datasets.render_clips(labels, frames=1, size=ENCODER["size"], seed=seed,
                                           return_states=True)
    return frames[:, 0], states[:, 0]


def _pretrain_encoder(path, *, count, epochs, seed, log):
    from tf_vib import datasets
    from tf_vib._keras import keras

    keras.utils.set_random_seed(seed)
    extractor = datasets.build_extractor(ENCODER["backbone"], weights=None, input_size=ENCODER["size"],
                                         seed=seed)
    base = extractor.layers[-1]  # the keras.applications model (after its Rescaling)
    frames, states = pretraining_frames(count, seed + 1000)
    held = max(1, count // 10)
    # Each target at unit variance, so that position and size weigh as much as the angle.
    states = (states - states[held:].mean(axis=0)) / (states[held:].std(axis=0) + 1e-6)
    inputs = keras.Input(frames.shape[1:])
    outputs = keras.layers.Dense(states.shape[-1])(extractor(keras.layers.Rescaling(255.0)(inputs)))
    model = keras.Model(inputs, outputs, name="frame_encoder")
    model.compile(keras.optimizers.Adam(ENCODER["learning_rate"]), "mse")
    log(f"pretraining the frame encoder for {epochs} epochs on {count - held} frames of its own")
    model.fit(frames[held:], states[held:], epochs=epochs, batch_size=ENCODER["batch_frames"], verbose=2)
    _recalibrate_batch_norm(model, frames[held:])
    mse = float(np.mean((model.predict(frames[:held], verbose=0) - states[:held]) ** 2))
    base.save_weights(str(path))
    return {"encoder_val_mse": mse, "state_variance": 1.0}


def _recalibrate_batch_norm(model, frames, chunk=64, chunks=16):
    """Moving statistics of every batch norm = the mean of its statistics over training frames.

    Moving averages kept during training lag behind weights that still change, which leaves
    inference far from training in a network trained from scratch this briefly; one pass
    that averages the batch statistics of fixed weights puts them back in agreement.
    """
    from tf_vib._keras import keras

    layers = [layer for layer in model.submodules if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    try:
        for k in range(min(chunks, len(frames) // chunk)):
            for layer in layers:
                layer.momentum = k / (k + 1)  # a running mean of the chunks' statistics
            model(frames[k * chunk : (k + 1) * chunk], training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


def paper_features(results, *, seed=0, quick=False, log=print):
    """``(features SequenceDataset, train indices, val indices, info)``, cached in ``results``.

    ``quick`` pretrains the encoder for one epoch on 64 frames: a smoke test of the pipeline.
    """
    from tf_vib import datasets
    from tf_vib.datasets.sequences import stratified_indices

    folder = pathlib.Path(results) / "paper"
    folder.mkdir(parents=True, exist_ok=True)
    clips = paper_clips(seed)
    train_idx, val_idx = stratified_indices(clips.y_train, 0.2, seed=seed)
    info_path = folder / f"encoder_seed{seed}.json"
    weights = folder / f"encoder_seed{seed}.weights.h5"
    if not weights.exists():
        epochs = 1 if quick else ENCODER["encoder_epochs"]
        count = 64 if quick else ENCODER["pretraining_frames"]
        info = _pretrain_encoder(weights, count=count, epochs=epochs, seed=seed, log=log)
        info_path.write_text(json.dumps(info))
    info = json.loads(info_path.read_text())
    log("extracting 2048-d features of every frame with the trained encoder")
    data = datasets.extract_features(clips, backbone=ENCODER["backbone"], weights=weights,
                                     input_size=ENCODER["size"], cache=folder / "features")
    mean = data.x_train[train_idx].mean(axis=(0, 1))
    std = data.x_train[train_idx].std(axis=(0, 1)) + 1e-6
    data = dataclasses.replace(data, x_train=((data.x_train - mean) / std).astype(np.float32),
                               x_test=((data.x_test - mean) / std).astype(np.float32))
    return data, train_idx, val_idx, info


def run_paper(results, *, seed=0, quick=False, log=print):
    """Baseline LSTM(2048), tf-vib, and the LSTM(8) floor on the encoder's features: a JSON dict."""
    from tf_vib import compress
    from tf_vib.bench.common import LATENCY_TIMING, add_files, model_record, scratch
    from tf_vib.cli.demo import train_baseline
    from tf_vib.cli.deploy import convert_and_measure

    data, train_idx, val_idx, info = paper_features(results, seed=seed, quick=quick, log=log)
    train = (data.x_train[train_idx], data.y_train[train_idx])
    val = (data.x_train[val_idx], data.y_train[val_idx])
    test = (data.x_test, data.y_test)
    units = 64 if quick else 2048
    log(f"baseline LSTM({units}) on {data.input_shape} features of {len(train[0])} clips")
    started = time.perf_counter()
    baseline = train_baseline(data, *train, val, units=units, epochs=3 if quick else 30, seed=seed, verbose=2)
    runs = {"baseline": model_record(baseline, test, time.perf_counter() - started)}
    started = time.perf_counter()
    result = compress(baseline, train, validation_data=val, test_data=test, seed=seed, verbose=1,
                      **({"epochs": 3, "finetune_epochs": 2} if quick else {}))
    runs["vib"] = model_record(result.model, test, time.perf_counter() - started, layers=result.report.layers,
                          threshold=result.threshold)
    started = time.perf_counter()
    floor, _ = scratch(data, train, val, units=8, epochs=3 if quick else 100, seed=seed)
    runs["lstm8 (scratch)"] = model_record(floor, test, time.perf_counter() - started)
    models = {"baseline": baseline, "vib": result.model, "lstm8 (scratch)": floor}
    figures, _ = convert_and_measure(models, ("float32", "int8"), train[0], *test, repeats=5, rounds=3,
                                     latency_samples=len(test[0]), log=log)
    add_files(runs, figures)
    return {"dataset": "paper_size", "seed": seed, "quick": quick, "encoder": {**ENCODER, **info},
            "input_shape": list(data.input_shape), "n_train": len(train[0]), "n_val": len(val[0]),
            "n_test": len(test[0]), "runs": runs, "latency_timing": LATENCY_TIMING}
