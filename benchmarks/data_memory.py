"""Peak memory of compress() on a TFRecord dataset as the data grows (issue 18).

Each size runs in its own child process, whose peak RSS (``resource.getrusage``,
``ru_maxrss``) is what it reports: the training data written to TFRecord shards (in chunks,
by the parent) at ``--samples`` and 10 times that, then compressed streamed (a
``tf.data.Dataset`` of the shards) and, for comparison, as arrays read from the same shards
(what a dataset cost before compress() streamed it). The validation shard has the same size
at every scale. Prints a Markdown table (docs/scaling.md has the one measured here)::

    nice -n 5 python benchmarks/data_memory.py --samples 4000
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

T, F, CLASSES, BATCH, CHUNK = 40, 32, 4, 128, 2000


def write_shards(folder, name, samples, seed, shards=4):
    """``samples`` generated (x, y) written to ``shards`` TFRecord files, ``CHUNK`` at a time."""
    from tf_vib.datasets import write_tfrecord

    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(CLASSES, F)).astype("float32")

    def chunks(count):
        for start in range(0, count, CHUNK):
            y = rng.integers(0, CLASSES, min(CHUNK, count - start))
            yield rng.normal(size=(len(y), T, F)).astype("float32") + centres[y][:, None, :] * 0.3, y

    sizes = [samples // shards + (i < samples % shards) for i in range(shards)]
    return [write_tfrecord(os.path.join(folder, f"{name}-{i:02d}.tfrecord"), chunks(size))
            for i, size in enumerate(sizes)]


def read_shards(paths):
    from tf_vib.datasets import read_tfrecords

    return read_tfrecords(paths, (T, F), BATCH).prefetch(2)


def child(folder, mode):
    """One compress() run on the shards in ``folder``; prints its figures as JSON."""
    import tf_vib
    from tf_vib._keras import keras

    train = read_shards(sorted(p for p in _files(folder) if "/train-" in p))
    val = read_shards(sorted(p for p in _files(folder) if "/val-" in p))
    if mode == "arrays":  # what a user had to do before compress() streamed datasets
        batches = list(train.as_numpy_iterator())
        train = (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
        del batches
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((T, F)), keras.layers.LSTM(16), keras.layers.Dense(CLASSES)])
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    started = time.perf_counter()
    result = tf_vib.compress(model, train, validation_data=val, epochs=1, finetune_epochs=1, batch_size=BATCH,
                             thresholds=(0.0,), unit_multiple=1, verbose=0)
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "seconds": time.perf_counter() - started,
                      "val_accuracy": result.report.stages[-1].val_accuracy}))


def _files(folder):
    return [os.path.join(folder, name) for name in os.listdir(folder)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000, help="training samples at 1x (default 4000)")
    parser.add_argument("--val", type=int, default=1000, help="validation samples (default 1000)")
    parser.add_argument("--modes", default="stream,arrays")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    rows = []
    for scale in (1, 10):
        with tempfile.TemporaryDirectory() as folder:
            samples = args.samples * scale
            write_shards(folder, "train", samples, seed=scale)
            write_shards(folder, "val", args.val, seed=0, shards=1)
            size = sum(os.path.getsize(p) for p in _files(folder) if "/train-" in p) / 2**20
            for mode in args.modes.split(","):
                out = subprocess.run([sys.executable, __file__, "--child", folder, mode], check=True,
                                     capture_output=True, text=True).stdout
                figures = json.loads(out.strip().splitlines()[-1])
                rows.append((samples, size, mode, figures))
                print(f"{samples} samples ({size:.0f} MB of shards), {mode}: {figures}", file=sys.stderr, flush=True)
    print("| training samples | shards on disk | data given as | peak RSS | compress() time |")
    print("|---:|---:|---|---:|---:|")
    for samples, size, mode, figures in rows:
        given = "tf.data.Dataset (streamed)" if mode == "stream" else "NumPy arrays read from the shards"
        print(f"| {samples:,} | {size:.0f} MB | {given} | {figures['peak_rss_mb']:.0f} MB | "
              f"{figures['seconds']:.0f} s |")


if __name__ == "__main__":
    main()
