"""The table of docs/keras3.md: Keras 3 LSTM and GRU models through TF's converter and tf-vib's.

    python benchmarks/keras3_converters.py            # prints the Markdown table
    python benchmarks/keras3_converters.py --no-pi    # without the emulated Raspberry Pi

For each model (``Sequential([Input((29, 12)), LSTM(12) or GRU(12), Dense(9)])``, Keras 3,
seeded initial weights) three float32 conversions: ``tf.lite.TFLiteConverter.from_keras_model``
as it is, the same with Flex ops (``SELECT_TF_OPS`` and tensor lists kept, the recipe TF's
error message gives), and ``converters.to_tflite``. Each file's ops, size and batch-1 latency
on this host's ai-edge-litert (``converters.measure_latency``, 1 thread), and whether
tflite-runtime 2.14 and ai-edge-litert load and run it inside the emulated Raspberry Pi
userland of ``shared/tools/pi/pi-run`` (with the arm64 instructions an invoke takes, which
are repeatable where emulated wall time is not). The files and pi-run's output are kept in
``benchmarks/results/keras3/``.
"""

import contextlib
import io
import os
import pathlib
import re
import subprocess
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's tf_vib and converters, not an installed copy

import converters  # noqa: E402
from tf_vib._keras import tf  # noqa: E402

OUT = HERE / "results" / "keras3"
PI_RUN = HERE.parents[2] / "shared" / "tools" / "pi" / "pi-run"
if not PI_RUN.exists():  # run from the main checkout rather than a worktree
    PI_RUN = HERE.parents[1] / "shared" / "tools" / "pi" / "pi-run"


def keras3_model(kind):
    import keras

    keras.utils.set_random_seed(0)
    recurrent = {"LSTM": keras.layers.LSTM, "GRU": keras.layers.GRU}[kind](12)
    return keras.Sequential([keras.Input((29, 12)), recurrent, keras.layers.Dense(9)], name=kind.lower())


def tf_converter(model, flex):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if flex:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        converter._experimental_lower_tensor_list_ops = False
    with contextlib.redirect_stdout(io.StringIO()):  # Keras 3's export() prints its signature
        return converter.convert()


def first_error_line(error):
    """The first MLIR ``error:`` message (without its location), or the first line."""
    messages = [line.rsplit("error: ", 1)[1] for line in str(error).splitlines() if "error: " in line]
    messages = [m for m in messages if not m.startswith("loc(")] or [str(error).strip().splitlines()[0]]
    return messages[0][:160]


def host_latency_us(flat, x):
    try:
        return f"{converters.measure_latency(flat, x, repeats=50, runtime='ai_edge_litert').median_us:.0f} us"
    except (RuntimeError, ValueError) as error:
        return load_failure(str(error))


def load_failure(message):
    if "Select TensorFlow op" in message:
        return "does not load (Flex ops, and the runtime has no Flex delegate)"
    return f"does not load: {message[:80]}"


def pi_loads(paths, invokes=3):
    """``{(runtime, file name): cell}`` from pi-run's output: the file's arm64 instructions
    per invoke (the median of ``invokes``) or why it does not load."""
    output = subprocess.run([str(PI_RUN), *map(str, paths)], capture_output=True, text=True, timeout=3600,
                            env={**os.environ, "NINV": str(invokes)}).stdout
    results = {}
    for section in output.split("=== emulated ")[1:]:
        runtime = section.split(",", 1)[1].split()[0]
        loaded = []
        for line in section.splitlines():
            name, _, rest = line.partition(".tflite: ")
            if rest.startswith("cannot load"):
                results[(runtime, name + ".tflite")] = load_failure(rest)
            elif rest:
                loaded.append(name + ".tflite")
            counts = re.match(r"instructions per invoke .*: \[(.*)\]", line)
            if counts:
                values = [int(v) for v in counts.group(1).split(",")]
                for i, name_ in enumerate(loaded):
                    median = int(np.median(values[i * invokes:(i + 1) * invokes]))
                    results[(runtime, name_)] = f"runs, {median / 1000:.0f}k instructions/invoke"
    return results, output


def main(argv):
    OUT.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(0).normal(size=(8, 29, 12)).astype(np.float32)
    rows, files = [], []
    for kind in ("LSTM", "GRU"):
        model = keras3_model(kind)
        for name, convert in [("TF from_keras_model", lambda m: tf_converter(m, flex=False)),
                              ("TF + SELECT_TF_OPS (Flex)", lambda m: tf_converter(m, flex=True)),
                              ("tf-vib to_tflite", lambda m: converters.to_tflite(m, quantization="float32"))]:
            try:
                flat = convert(model)
            except Exception as error:  # noqa: BLE001  (the table reports any converter error)
                rows.append([kind, name, f"fails: {first_error_line(error)}", "", "", ""])
                continue
            path = OUT / f"{kind.lower()}_{name.split()[0].lower()}{'_flex' if 'Flex' in name else ''}.tflite"
            path.write_bytes(flat)
            files.append(path)
            info = converters.describe_tflite(flat)
            ops = ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(info.op_counts.items()))
            rows.append([kind, name, "converts", ops, f"{len(flat) / 1024:.1f} KiB", host_latency_us(flat, x), path.name])
    pi, raw = ({}, "") if "--no-pi" in argv or not PI_RUN.exists() else pi_loads(files)
    print("| model | converter | result | ops | size | host latency (ai-edge-litert, batch 1) "
          "| Pi: tflite-runtime 2.14 | Pi: ai-edge-litert |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        name = row[6] if len(row) > 6 else None
        loads = [pi.get((runtime, name), "-") if name else "-" for runtime in ("tflite_runtime", "ai_edge_litert")]
        print("| " + " | ".join([*row[:6], *loads]) + " |")
    if raw:
        (OUT / "pi_run.txt").write_text(raw)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
