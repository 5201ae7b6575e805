"""Make the cost table that ``quantization="auto"`` follows, from emulated-Pi instruction counts.

Each case is a one-layer model (the layer, float input and output), converted to float32
and to full int8 (float input and output, so the int8 file pays its QUANTIZE and
DEQUANTIZE as an int8 layer inside a float file would), and run by ``pi-run`` (an
emulated Raspberry Pi userland, both ai-edge-litert and tflite-runtime 2.14; it counts the
arm64 instructions of each invoke, which are repeatable where emulated wall time is not).
A row of the table is one case: its multiply-accumulates per invoke (the size measure the
plan looks rows up by, `converters.plan.quantization.layer_macs`) and the instructions of
the last of ``NINV`` invokes in each mode.

usage: python benchmarks/cost_table.py [--out converters/cost_tables/cortex_a72.json]
                                      [--pi-run PATH] [--cpu cortex-a72] [--work DIR]
``--pi-run`` defaults to the first ``shared/tools/pi/pi-run`` beside the checkout or one level
up (a worktree); ``--work`` keeps the files, and a rerun reuses those already there.
"""

import argparse
import datetime
import json
import pathlib
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import converters  # noqa: E402
from converters.plan.quantization import layer_kind, layer_macs  # noqa: E402
from tf_vib._keras import keras  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from emulated_pi import find_pi_run, git_commit, pi_counts  # noqa: E402

#: (name, input shape, layer factory): the sizes span the demo's LSTM(12) to a paper-sized
#: LSTM, a classifier head to a wide Dense, small to MobileNet-sized convolutions, and the
#: 3x3 depthwise convolutions of MobileNet-style blocks.
CASES = [
    *[(f"lstm{u}", (26, 12), lambda u=u: keras.layers.LSTM(u)) for u in (4, 8, 12, 16, 32, 64, 128)],
    *[(f"dense{i}x{o}", (i,), lambda o=o: keras.layers.Dense(o)) for i, o in
      ((16, 8), (64, 64), (256, 256), (1024, 512))],
    ("conv1d_26x12_k3x16", (26, 12), lambda: keras.layers.Conv1D(16, 3, padding="same")),
    ("conv2d_16x16x8_k3x16", (16, 16, 8), lambda: keras.layers.Conv2D(16, 3, padding="same")),
    ("conv2d_32x32x16_k3x32", (32, 32, 16), lambda: keras.layers.Conv2D(32, 3, padding="same")),
    ("conv2d_56x56x24_k1x48", (56, 56, 24), lambda: keras.layers.Conv2D(48, 1)),
    *[(f"depthwise_{h}x{h}x{c}_k3", (h, h, c), lambda: keras.layers.DepthwiseConv2D(3, padding="same"))
      for h, c in ((8, 16), (16, 32), (32, 64), (56, 96))],
]


def _files(directory):
    """Write each case's float32 and int8 files; return ``[(case, kind, macs, {mode: path})]``."""
    rows = []
    rng = np.random.default_rng(0)
    for name, shape, factory in CASES:
        keras.utils.set_random_seed(0)
        layer = factory()
        model = keras.Sequential([keras.Input(shape), layer], name=name)
        x = rng.normal(size=(64, *shape)).astype(np.float32)
        paths = {mode: directory / f"{name}_{mode}.tflite" for mode in ("float32", "int8")}
        if not all(path.exists() for path in paths.values()):
            flats = converters.to_tflite_many(model, list(paths), representative_data=x, unit_multiple=1)
            for mode, flat in flats.items():
                paths[mode].write_bytes(flat)
        rows.append((name, layer_kind(layer), layer_macs(layer), paths))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "converters" / "cost_tables" / "cortex_a72.json"))
    parser.add_argument("--pi-run", default=find_pi_run() or "pi-run")
    parser.add_argument("--work", default=None, help="keep the .tflite files here (and reuse them)")
    parser.add_argument("--cpu", default="cortex-a72")
    parser.add_argument("--ninv", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tf-vib-cost-") as tmp:
        work = pathlib.Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = _files(work)
        counts = pi_counts(args.pi_run, [p for *_, paths in rows for p in paths.values()], args.cpu, args.ninv)
    costs = {}
    for runtime, by_file in counts.items():
        table = costs.setdefault(runtime, {})
        for name, kind, macs, paths in rows:
            modes = {mode: by_file.get(path.name) for mode, path in paths.items()}
            if None in modes.values():  # a file this runtime cannot load has no cost there
                continue
            table.setdefault(kind, []).append({"case": name, "macs": macs, **modes})
    table = {
        "target": args.cpu,
        "unit": "arm64 instructions per invoke (batch 1, one thread), emulated with qemu-aarch64",
        "made_by": "python benchmarks/cost_table.py",
        "commit": git_commit(),
        "date": datetime.date.today().isoformat(),
        "costs": costs,
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=1) + "\n")
    for runtime, kinds in costs.items():
        print(f"== {runtime}")
        for kind, entries in kinds.items():
            for row in entries:
                print(f"{kind:6} {row['case']:24} {row['macs']:>10,} MACs  float32 {row['float32']:>10,}  "
                      f"int8 {row['int8']:>10,}  int8/float32 {row['int8'] / row['float32']:.2f}")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
