"""Write whole-clip and streaming TFLite files of two small models, for the emulated Pi.

    python benchmarks/streaming_files.py OUT_DIR
    ../shared/tools/pi/pi-run OUT_DIR/*.tflite

Models (seeded weights; instruction counts do not depend on training): the demo's
compressed ``LSTM(12) -> Dense(9)`` over 26 steps x 12 features, and a frame CNN
``TimeDistributed(Conv2D 8, Conv2D 16, global pooling) -> LSTM(16) -> Dense(7)`` over 8
frames of 32x32x3 (the synthetic action clips' shape). Each is written in float32 and int8,
whole-clip (one invoke per clip) and streaming (one invoke per frame); every file is
verified against its Keras model first (docs/deployment.md, "Streaming").
"""

import pathlib
import sys

import numpy as np

import converters
from tf_vib._keras import keras
from tf_vib.datasets import render_clips


def models(seed=0):
    keras.utils.set_random_seed(seed)
    features = keras.Sequential([keras.Input((26, 12)), keras.layers.LSTM(12), keras.layers.Dense(9)],
                                name="lstm12")
    frames = keras.Sequential([
        keras.Input((8, 32, 32, 3)),
        keras.layers.TimeDistributed(keras.layers.Conv2D(8, 3, strides=2, activation="relu")),
        keras.layers.TimeDistributed(keras.layers.Conv2D(16, 3, strides=2, activation="relu")),
        keras.layers.TimeDistributed(keras.layers.GlobalAveragePooling2D()),
        keras.layers.LSTM(16),
        keras.layers.Dense(7),
    ], name="cnn_lstm")
    rng = np.random.default_rng(seed)
    clips = render_clips(rng.integers(0, 7, 200), frames=8, size=32, seed=seed)
    return {"lstm12": (features, rng.normal(size=(200, 26, 12)).astype("float32")),
            "cnn_lstm": (frames, clips)}


def main(out):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, (model, x) in models().items():
        for streaming in (False, True):
            flats = converters.to_tflite_many(model, ["float32", "int8"], representative_data=x,
                                              streaming=streaming)
            for mode, flat in flats.items():
                check = (converters.verify_streaming if streaming else converters.verify)(model, flat, x[:50])
                path = out / f"{name}_{'stream' if streaming else 'whole'}_{mode}.tflite"
                path.write_bytes(flat)
                print(f"{path.name}: {len(flat):,} bytes; {check}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "streaming_files"))
