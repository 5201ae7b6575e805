"""Write whole-clip and streaming TFLite files of two small models, for the emulated Pi.

    python benchmarks/streaming_files.py OUT_DIR
    ../shared/tools/pi/pi-run OUT_DIR/*.tflite

Models, trained briefly (seed 0): the demo's compressed size, ``LSTM(12) -> Dense(9)`` on
JapaneseVowels (26 steps x 12 features), and a frame CNN ``TimeDistributed(Conv2D 8,
Conv2D 8, max pooling, Flatten: 72 features) -> LSTM(16) -> Dense(7)`` on synthetic action clips (8 frames of
32x32x3). Each is written in float32 and int8, whole-clip (one invoke per clip) and
streaming (one invoke per frame), and verified on the test clips against its Keras model
(docs/deployment.md, "Streaming"); ``empty.tflite`` (one ADD) is the cost of an invoke.
"""

import pathlib
import sys

import converters
from tf_vib._keras import keras, tf
from tf_vib.datasets import synthetic_actions, uea


def models(seed=0):
    """``{name: (trained model, test clips, test labels)}``."""
    keras.utils.set_random_seed(seed)
    vowels = uea("JapaneseVowels")
    features = keras.Sequential([keras.Input((26, 12)), keras.layers.LSTM(12), keras.layers.Dense(9)],
                                name="lstm12")
    actions = synthetic_actions(40, frames=8, size=32, seed=seed)
    frames = keras.Sequential([
        keras.Input((8, 32, 32, 3)),
        keras.layers.TimeDistributed(keras.layers.Conv2D(8, 3, strides=2, activation="relu")),
        keras.layers.TimeDistributed(keras.layers.Conv2D(8, 3, strides=2, activation="relu")),
        keras.layers.TimeDistributed(keras.layers.MaxPooling2D(2)),
        keras.layers.TimeDistributed(keras.layers.Flatten()),  # global pooling would lose where the shape is
        keras.layers.LSTM(16),
        keras.layers.Dense(7),
    ], name="cnn_lstm")
    trained = {}
    for name, model, data, epochs in (("lstm12", features, vowels, 40), ("cnn_lstm", frames, actions, 25)):
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
        model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=16, verbose=0)
        trained[name] = (model, data.x_train, data.x_test, data.y_test)
    return trained


def empty_file():
    """A file with one ADD: what an invoke costs before any work."""
    function = tf.function(lambda x: x + 1.0, input_signature=[tf.TensorSpec((1, 12), tf.float32)])
    return tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()]).convert()


def main(out):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "empty.tflite").write_bytes(empty_file())
    for name, (model, x_train, x, y) in models().items():
        for streaming in (False, True):
            flats = converters.to_tflite_many(model, ["float32", "int8"], representative_data=x_train,
                                              streaming=streaming)
            for mode, flat in flats.items():
                check = (converters.verify_streaming if streaming else converters.verify)(model, flat, x, y)
                path = out / f"{name}_{'stream' if streaming else 'whole'}_{mode}.tflite"
                path.write_bytes(flat)
                print(f"{path.name}: {len(flat):,} bytes; {check}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "streaming_files"))
