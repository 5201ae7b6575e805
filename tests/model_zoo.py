"""A zoo of small models written the way Keras tutorials and keras.io examples write them.

Each builder returns a compiled tf_keras model and a description of its data (`Case`):
``case.data(n, seed)`` makes random ``(x, y)`` of the right shapes and dtypes, ``case.kind``
says what the model does (``"classifier"``, ``"regressor"`` or ``"tagger"``) and
``case.time_steps`` is the length to convert a model whose input has no fixed length with.
Models stay tiny (<= 16 units, 8 steps, a vocabulary of 20) so the whole table is fast.
"""

import dataclasses
import functools
from collections.abc import Callable

import numpy as np

from tf_vib._keras import keras

STEPS, FEATURES, UNITS, CLASSES, VOCAB = 8, 3, 8, 3, 20
L = keras.layers
LOGITS_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@dataclasses.dataclass
class Case:
    """A compiled model and the data it takes.

    Attributes:
      name: the builder's name (the test id).
      model: the compiled tf_keras model.
      inputs, targets: one data maker ``(rng, n) -> array`` per model input / output; a dict
        (by input or output name) where the model is called with or trained on a dict.
      kind: ``"classifier"``, ``"regressor"`` or ``"tagger"`` (the first output's kind).
      time_steps: the steps to convert with when the input's length is None, else None.
    """

    name: str
    model: keras.Model
    inputs: Callable | list | dict
    targets: Callable | list | dict
    kind: str
    time_steps: int | None = None

    def data(self, n, seed=0):
        """``n`` random samples ``(x, y)``, the same for the same seed."""
        rng = np.random.default_rng(seed)
        return _make(self.inputs, rng, n), _make(self.targets, rng, n)


def _make(makers, rng, n):
    if isinstance(makers, dict):
        return {name: make(rng, n) for name, make in makers.items()}
    if isinstance(makers, list):
        return [make(rng, n) for make in makers]
    return makers(rng, n)


def floats(*shape):
    return lambda rng, n: rng.normal(size=(n, *shape)).astype("float32")


def tokens(length, *, padded=False):
    """Token ids in [1, VOCAB); with ``padded``, each row ends in a random run of zeros."""

    def make(rng, n):
        ids = rng.integers(1, VOCAB, size=(n, length)).astype("int32")
        if padded:
            lengths = rng.integers(length // 2, length + 1, size=n)
            ids[np.arange(length)[None, :] >= lengths[:, None]] = 0
        return ids

    return make


def labels(*shape):
    return lambda rng, n: rng.integers(0, CLASSES, size=(n, *shape)).astype("int32")


def _compiled(model, loss=LOGITS_LOSS, metrics=("accuracy",)):
    model.compile(optimizer="adam", loss=loss, metrics=list(metrics) or None)
    return model


def _sequential(name, layers, *, shape=(STEPS, FEATURES), dtype="float32", loss=LOGITS_LOSS):
    model = keras.Sequential([keras.Input(shape, dtype=dtype), *layers], name=name)
    return _compiled(model, loss)


def _classifier(name, layers, **kwargs):
    """A Sequential over float sequences of (STEPS, FEATURES) with a class head."""
    return Case(name, _sequential(name, layers, **kwargs), floats(STEPS, FEATURES), labels(), "classifier")


# -- recurrent layers ------------------------------------------------------------------

def lstm():
    return _classifier("lstm", [L.LSTM(UNITS), L.Dense(CLASSES)])


def stacked_lstm():
    return _classifier("stacked_lstm", [
        L.LSTM(UNITS, return_sequences=True), L.LSTM(UNITS), L.Dense(CLASSES)])


def gru(reset_after):
    name = "gru_reset_after" if reset_after else "gru_reset_before"
    return _classifier(name, [L.GRU(UNITS, reset_after=reset_after), L.Dense(CLASSES)])


def simple_rnn():
    return _classifier("simple_rnn", [L.SimpleRNN(UNITS), L.Dense(CLASSES)])


def bidirectional(merge_mode):
    return _classifier(f"bilstm_{merge_mode}", [
        L.Bidirectional(L.LSTM(UNITS), merge_mode=merge_mode), L.Dense(CLASSES)])


def stacked_bidirectional():
    return _classifier("stacked_bilstm", [
        L.Bidirectional(L.LSTM(UNITS, return_sequences=True)),
        L.Bidirectional(L.LSTM(UNITS)),
        L.Dense(CLASSES),
    ])


def regularized_lstm():
    return _classifier("regularized_lstm", [
        L.LSTM(UNITS, dropout=0.2, recurrent_dropout=0.2,
               kernel_regularizer=keras.regularizers.l2(1e-4)),
        L.Dense(CLASSES),
    ])


def backwards_lstm():
    return _classifier("backwards_lstm", [L.LSTM(UNITS, go_backwards=True), L.Dense(CLASSES)])


# -- tokens ---------------------------------------------------------------------------

def embedding_lstm():
    model = _sequential("embedding_lstm", [L.Embedding(VOCAB, UNITS), L.LSTM(UNITS), L.Dense(CLASSES)],
                        shape=(STEPS,), dtype="int32")
    return Case("embedding_lstm", model, tokens(STEPS), labels(), "classifier")


def embedding_mask_zero_lstm():
    inputs = keras.Input((STEPS,), dtype="int32")
    x = L.Embedding(VOCAB, UNITS, mask_zero=True)(inputs)
    x = L.LSTM(UNITS)(x)
    model = _compiled(keras.Model(inputs, L.Dense(CLASSES)(x), name="embedding_mask_zero_lstm"))
    return Case(model.name, model, tokens(STEPS, padded=True), labels(), "classifier")


def variable_length_gru():
    inputs = keras.Input((None,), dtype="int32")
    x = L.Embedding(VOCAB, UNITS)(inputs)
    x = L.GRU(UNITS)(x)
    model = _compiled(keras.Model(inputs, L.Dense(CLASSES)(x), name="variable_length_gru"))
    return Case(model.name, model, tokens(STEPS), labels(), "classifier", time_steps=STEPS)


# -- convolutions before the recurrent layer --------------------------------------------

def conv1d_lstm():
    return _classifier("conv1d_lstm", [
        L.Conv1D(UNITS, 3, padding="same", activation="relu"),
        L.MaxPooling1D(2),
        L.LSTM(UNITS),
        L.Dense(CLASSES),
    ])


def time_distributed_cnn_lstm():
    frames = (4, 8, 8, 1)
    cnn = keras.Sequential([keras.Input(frames[1:]), L.Conv2D(4, 3, activation="relu"),
                            L.GlobalAveragePooling2D()], name="frame_cnn")
    model = _sequential("time_distributed_cnn_lstm",
                        [L.TimeDistributed(cnn), L.LSTM(UNITS), L.Dense(CLASSES)], shape=frames)
    return Case(model.name, model, floats(*frames), labels(), "classifier")


def _frame_cnn(name, block, frames):
    frame = keras.Input(frames[1:])
    return keras.Model(frame, L.GlobalAveragePooling2D()(block(frame)), name=name)


def _hard_swish(x):
    return L.Multiply()([x, L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)])


def _nested_cnn(x):
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(4, 3, padding="same")(x)))
    return L.BatchNormalization()(L.DepthwiseConv2D(3)(x))


def _mobilenet_block(x):
    """A MobileNetV3-style inverted residual block (expand, depthwise, squeeze-and-excite,
    project, residual Add) and its last 1x1 convolution with hard-swish."""
    x = L.Rescaling(1 / 127.5, offset=-1.0)(x)
    x = _hard_swish(L.BatchNormalization()(L.Conv2D(4, 3, strides=2, padding="same")(x)))
    y = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 1)(x)))
    y = L.ReLU()(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same")(y)))
    excite = L.Conv2D(8, 1, activation="hard_sigmoid")(
        L.Conv2D(2, 1, activation="relu")(L.GlobalAveragePooling2D(keepdims=True)(y)))
    y = L.BatchNormalization()(L.Conv2D(4, 1)(L.Multiply()([y, excite])))
    x = L.Add()([x, y])
    return _hard_swish(L.BatchNormalization()(L.Conv2D(UNITS, 1)(x)))


def cnn_lstm(name, block):
    """A clip model whose per-frame CNN is a nested functional model (keras.applications style)."""
    frames = (4, 8, 8, 3)
    clip = keras.Input(frames)
    features = L.TimeDistributed(_frame_cnn(f"{name}_cnn", block, frames))(clip)
    model = _compiled(keras.Model(clip, L.Dense(CLASSES)(L.LSTM(UNITS)(features)), name=name))
    return Case(model.name, model, floats(*frames), labels(), "classifier")


# -- several inputs or outputs ------------------------------------------------------------

def _two_input_graph():
    sequence = keras.Input((STEPS, FEATURES), name="sequence")
    static = keras.Input((4,), name="static")
    x = L.Concatenate()([L.LSTM(UNITS)(sequence), L.Dense(UNITS, activation="relu")(static)])
    return sequence, static, L.Dense(CLASSES)(x)


def two_inputs_list():
    sequence, static, outputs = _two_input_graph()
    model = _compiled(keras.Model([sequence, static], outputs, name="two_inputs_list"))
    return Case(model.name, model, [floats(STEPS, FEATURES), floats(4)], labels(), "classifier")


def two_inputs_dict():
    sequence, static, outputs = _two_input_graph()
    model = _compiled(keras.Model({"sequence": sequence, "static": static}, outputs,
                                  name="two_inputs_dict"))
    return Case(model.name, model, {"sequence": floats(STEPS, FEATURES), "static": floats(4)},
                labels(), "classifier")


def two_outputs():
    inputs = keras.Input((STEPS, FEATURES))
    x = L.LSTM(UNITS)(inputs)
    model = keras.Model(inputs, [L.Dense(CLASSES, name="label")(x), L.Dense(1, name="value")(x)],
                        name="two_outputs")
    model.compile(optimizer="adam", loss={"label": LOGITS_LOSS, "value": "mse"})
    return Case(model.name, model, floats(STEPS, FEATURES), {"label": labels(), "value": floats(1)},
                "classifier")


# -- heads ------------------------------------------------------------------------------

def tagger():
    model = _sequential("tagger", [L.LSTM(UNITS, return_sequences=True),
                                   L.TimeDistributed(L.Dense(CLASSES))])
    return Case(model.name, model, floats(STEPS, FEATURES), labels(STEPS), "tagger")


def global_average_lstm():
    return _classifier("global_average_lstm", [
        L.LSTM(UNITS, return_sequences=True), L.GlobalAveragePooling1D(), L.Dense(CLASSES)])


def normalized(norm):
    return _classifier(f"{norm.__name__.lower()}_between", [
        L.LSTM(UNITS, return_sequences=True), norm(), L.LSTM(UNITS), L.Dense(CLASSES)])


def softmax_activation():
    return _classifier("softmax_activation", [
        L.LSTM(UNITS), L.Dense(CLASSES), L.Activation("softmax")],
        loss="sparse_categorical_crossentropy")


def dense_dropout_head():
    return _classifier("dense_dropout_head", [
        L.LSTM(UNITS), L.Dense(16, activation="relu"), L.Dropout(0.3), L.Dense(CLASSES)])


def forecaster():
    model = _sequential("forecaster", [L.LSTM(UNITS), L.Dense(1)], shape=(24, 1), loss="mse")
    return Case(model.name, model, floats(24, 1), floats(1), "regressor")


BUILDERS = {
    "lstm": lstm,
    "stacked_lstm": stacked_lstm,
    "gru_reset_after": functools.partial(gru, True),
    "gru_reset_before": functools.partial(gru, False),
    "simple_rnn": simple_rnn,
    **{f"bilstm_{mode}": functools.partial(bidirectional, mode) for mode in ("concat", "sum", "ave", "mul")},
    "stacked_bilstm": stacked_bidirectional,
    "embedding_lstm": embedding_lstm,
    "embedding_mask_zero_lstm": embedding_mask_zero_lstm,
    "variable_length_gru": variable_length_gru,
    "conv1d_lstm": conv1d_lstm,
    "time_distributed_cnn_lstm": time_distributed_cnn_lstm,
    "nested_cnn_lstm": functools.partial(cnn_lstm, "nested_cnn_lstm", _nested_cnn),
    "mobilenet_style_lstm": functools.partial(cnn_lstm, "mobilenet_style_lstm", _mobilenet_block),
    "two_inputs_list": two_inputs_list,
    "two_inputs_dict": two_inputs_dict,
    "two_outputs": two_outputs,
    "tagger": tagger,
    "global_average_lstm": global_average_lstm,
    "batchnormalization_between": functools.partial(normalized, L.BatchNormalization),
    "layernormalization_between": functools.partial(normalized, L.LayerNormalization),
    "softmax_activation": softmax_activation,
    "dense_dropout_head": dense_dropout_head,
    "forecaster": forecaster,
    "regularized_lstm": regularized_lstm,
    "backwards_lstm": backwards_lstm,
}
