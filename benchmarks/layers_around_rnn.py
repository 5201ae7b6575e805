"""What the layers users write around their RNNs become in TFLite, and how each file verifies.

    PYTHONPATH=. python benchmarks/layers_around_rnn.py      # writes the JSON, prints the table
    PYTHONPATH=. python benchmarks/layers_around_rnn.py --only BatchNormalization   # rerun some rows

Each architecture alone: ``Input((8, 4))``, the layers, a ``Dense(3)`` head (per step for the
tagger), trained 25 epochs (Adam 1e-2, seed 0) on a synthetic 3-class task (the class is the
feature among the first three with the largest sum; per step: so far), converted by
`converters.to_tflite_many` in every mode (calibrated on 256 training samples) and checked by
`converters.verify` on 300 test samples. The table in docs/deployment.md ("Layers around the
RNN, measured") is this script's output; raw results: benchmarks/results/layers_around_rnn.json.
"""

import json
import pathlib

import numpy as np

import converters
from tf_vib._keras import keras

STEPS, FEATURES, CLASSES = 8, 4, 3
L = keras.layers
ROOT = pathlib.Path(__file__).resolve().parent


def _sequential(layers):
    return lambda: keras.Sequential([keras.Input((STEPS, FEATURES)), *layers(), L.Dense(CLASSES)])


def _concat_wider():
    inputs = keras.Input((STEPS, FEATURES))
    pooled = L.GlobalAveragePooling1D()(inputs)
    merged = L.Concatenate()([L.LSTM(8)(inputs), L.Lambda(lambda t: 4.0 * t)(pooled)])
    return keras.Model(inputs, L.Dense(CLASSES)(merged))


#: name -> (builder, per-step labels)
ARCHITECTURES = {
    "Bidirectional(LSTM), concat": (_sequential(lambda: [L.Bidirectional(L.LSTM(8))]), False),
    "Bidirectional(LSTM), sum": (_sequential(lambda: [L.Bidirectional(L.LSTM(8), merge_mode="sum")]), False),
    "Bidirectional(LSTM), ave": (_sequential(lambda: [L.Bidirectional(L.LSTM(8), merge_mode="ave")]), False),
    "Bidirectional(LSTM), mul": (_sequential(lambda: [L.Bidirectional(L.LSTM(8), merge_mode="mul")]), False),
    "Bidirectional(LSTM(return_sequences), sum) + GlobalAveragePooling1D": (_sequential(lambda: [
        L.Bidirectional(L.LSTM(8, return_sequences=True), merge_mode="sum"), L.GlobalAveragePooling1D()]), False),
    "Bidirectional(GRU)": (_sequential(lambda: [L.Bidirectional(L.GRU(8))]), False),
    "SimpleRNN": (_sequential(lambda: [L.SimpleRNN(8)]), False),
    "GRU (reset_after=True)": (_sequential(lambda: [L.GRU(8)]), False),
    "GRU(reset_after=False)": (_sequential(lambda: [L.GRU(8, reset_after=False)]), False),
    "LSTM(return_sequences) + GRU": (_sequential(lambda: [L.LSTM(8, return_sequences=True), L.GRU(8)]), False),
    "Conv1D + MaxPooling1D + LSTM": (_sequential(lambda: [L.Conv1D(8, 3, activation="relu"), L.MaxPooling1D(2),
                                                          L.LSTM(8)]), False),
    "LSTM(return_sequences) + TimeDistributed(Dense)": (lambda: keras.Sequential([
        keras.Input((STEPS, FEATURES)), L.LSTM(8, return_sequences=True), L.TimeDistributed(L.Dense(CLASSES))]), True),
    "LSTM(return_sequences) + GlobalAveragePooling1D": (_sequential(lambda: [
        L.LSTM(8, return_sequences=True), L.GlobalAveragePooling1D()]), False),
    "LSTM(return_sequences) + BatchNormalization + LSTM": (_sequential(lambda: [
        L.LSTM(8, return_sequences=True), L.BatchNormalization(), L.LSTM(8)]), False),
    "LSTM concatenated with a wider-range tensor": (_concat_wider, False),
}
#: the op kinds worth naming in the table (the rest are reshapes, slices, elementwise ops)
SHOWN = ("UNIDIRECTIONAL_SEQUENCE_LSTM", "WHILE", "REVERSE_V2", "CONCATENATION", "FULLY_CONNECTED", "CONV_2D",
         "MAX_POOL_2D", "MEAN", "TANH", "ADD", "MUL")


def data(n, seed):
    x = np.random.default_rng(seed).normal(size=(n, STEPS, FEATURES)).astype("float32")
    return x, x[..., :CLASSES].sum(1).argmax(-1), np.cumsum(x[..., :CLASSES], axis=1).argmax(-1)


def _ops(flat):
    counts = converters.describe_tflite(flat).op_counts
    return ", ".join(f"{op} x{counts[op]}" for op in SHOWN if counts.get(op))


def measure(name, build, per_step, seed=0):
    keras.utils.set_random_seed(seed)
    model = build()
    x, y, steps = data(1000, seed)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, steps if per_step else y, epochs=25, batch_size=32, verbose=0)
    files = converters.to_tflite_many(model, representative_data=x[:256])
    x_test, y_test, steps_test = data(300, seed + 1)
    row = {"model": name, "modes": {}}
    for mode, flat in files.items():
        result = converters.verify(model, flat, x_test, steps_test if per_step else y_test)
        notes = converters.describe_tflite(flat).tf_vib or {}
        row["modes"][mode] = {"ops": _ops(flat), "max_abs_diff": result.max_abs_diff,
                              "same_class": result.argmax_agreement, "keras_accuracy": result.keras_accuracy,
                              "tflite_accuracy": result.tflite_accuracy, "passed": result.passed,
                              "criterion": result.criterion, "repairs": len(notes.get("int8_repairs", []))
                              + len(notes.get("state_repairs", []))}
        print(f"[layers] {name}: {result}", flush=True)
    return row


def table(rows):
    lines = ["| model | float32 file | float32 max diff | float16 / dynamic max diff | int8 file | int8: same class, accuracy Keras / file | int8 verify |",
             "|---|---|---:|---:|---|---|---|"]
    for row in rows:
        m = row["modes"]
        low = max(m["float16"]["max_abs_diff"], m["dynamic"]["max_abs_diff"])
        i8 = m["int8"]
        lines.append(f"| {row['model']} | {m['float32']['ops']} | {m['float32']['max_abs_diff']:.1g} | {low:.1g} | "
                     f"{'the same' if i8['ops'] == m['float32']['ops'] else i8['ops']} | "
                     f"{100 * i8['same_class']:.1f}%, {100 * i8['keras_accuracy']:.1f}% / {100 * i8['tflite_accuracy']:.1f}% | "
                     f"{'passed' if i8['passed'] else 'FAILED'} (max diff {i8['max_abs_diff']:.2g}) |")
    return "\n".join(lines)


def main(argv=None):
    """Measure every architecture, or (``--only TEXT``) those whose name holds TEXT, keeping the
    other rows of the JSON; each row records the commit it was measured at."""
    import argparse
    import subprocess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="rerun only the rows whose name contains this")
    args = parser.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    out = ROOT / "results" / "layers_around_rnn.json"
    old = {row["model"]: row for row in json.loads(out.read_text())["rows"]} if out.exists() else {}
    rows = []
    for name, (build, per_step) in ARCHITECTURES.items():
        if args.only is None or args.only in name or name not in old:
            rows.append({**measure(name, build, per_step), "commit": commit})
        else:
            rows.append(old[name])
    out.write_text(json.dumps({"rows": rows}, indent=1, default=float))
    print(table(rows))


if __name__ == "__main__":
    main()
