"""Frame pruning on the synthetic action clips: frames kept and accuracy (issue 17's target:
>= 2x fewer frames at <= 1 point accuracy loss, on >= 1,000 generated test clips).

    python benchmarks/frame_pruning.py [--per-class 400] [--frames 12] [--epochs 15] [--out FILE]

Offline (generated clips), small (a 16x16 grey CNN-LSTM), one seed. Prints one JSON line
and writes it to ``--out`` (default benchmarks/results/frame_pruning.json).
"""

import argparse
import json
import pathlib
import subprocess
import time

import numpy as np

import tf_vib
from tf_vib._keras import keras
from tf_vib.datasets import select_frames, synthetic_actions

HERE = pathlib.Path(__file__).resolve().parent


def clip_model(frames, size, n_classes):
    """A small CNN-LSTM: a per-frame CNN, then an LSTM over the frames' features."""
    inputs = keras.Input((frames, size, size, 1))
    h = keras.layers.TimeDistributed(keras.layers.Conv2D(8, 3, strides=2, activation="relu"))(inputs)
    h = keras.layers.TimeDistributed(keras.layers.Conv2D(8, 3, strides=2, activation="relu"))(h)
    h = keras.layers.TimeDistributed(keras.layers.Flatten())(h)
    h = keras.layers.TimeDistributed(keras.layers.Dense(32, activation="relu"))(h)
    h = keras.layers.LSTM(32)(h)
    return keras.Model(inputs, keras.layers.Dense(n_classes)(h))


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), axis=-1) == y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=400)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--baseline-epochs", type=int, default=15)
    parser.add_argument("--out", default=str(HERE / "results" / "frame_pruning.json"))
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    data = synthetic_actions(args.per_class, frames=args.frames, size=args.size, channels=1,
                             test_fraction=0.4, seed=0)
    model = clip_model(args.frames, args.size, data.n_classes)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    started = time.perf_counter()
    model.fit(data.x_train, data.y_train, epochs=args.baseline_epochs, batch_size=64, validation_split=0.2,
              verbose=2)
    result = tf_vib.compress(model, (data.x_train, data.y_train), epochs=args.epochs,
                             finetune_epochs=max(1, args.epochs // 3), batch_size=64, frame_masks=True,
                             max_accuracy_drop=0.01, verbose=2)
    frames = result.report.frames or {"kept": list(range(args.frames)), "of": args.frames}
    row = {
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=HERE).stdout.strip(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "clips": {"train": len(data.y_train), "test": len(data.y_test)},
        "frames": frames,
        "frame_ratio": frames["of"] / len(frames["kept"]),
        "baseline_test_accuracy": accuracy(model, data.x_test, data.y_test),
        "compressed_test_accuracy": accuracy(result.model, select_frames(data.x_test, frames), data.y_test),
        "params": {"baseline": model.count_params(), "compressed": result.model.count_params()},
        "seconds": round(time.perf_counter() - started, 1),
        "settings": vars(args),
    }
    row["accuracy_loss_points"] = 100 * (row["baseline_test_accuracy"] - row["compressed_test_accuracy"])
    print(json.dumps(row))
    pathlib.Path(args.out).write_text(json.dumps(row, indent=1) + "\n")
    return row


if __name__ == "__main__":
    main()
