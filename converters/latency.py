"""Timing several ``.tflite`` files side by side, on the host: `compare_latency`.

The device runner (`converters.runtime`, copied to the Raspberry Pi as one file) times one
file (`measure_latency`); comparing files is what the host does before choosing one, so it
lives here, beside the runner rather than in it.
"""

import time

import numpy as np

from converters.runtime import Latency, TFLiteModel, load_interpreter, whole_batches
from tf_vib._checks import check_int

__all__ = ["compare_latency"]


def compare_latency(models, x, *, repeats=20, rounds=5, num_threads=1, runtime=None, seed=0):
    """Latency of several files measured side by side, interleaved, on the same samples.

    The files take turns at the finest grain that still times whole invokes: for each
    round and each sample, every file (in a shuffled order) runs one untimed invoke and
    then ``repeats`` timed ones on that sample. A machine whose speed drifts (a shared or
    throttled CPU: docs/deployment.md, "Runtimes") then slows all files alike, so the
    ratios between them are what to read.

    Args:
      models: ``{name: TFLiteModel, path or bytes}``; every file must take ``x``'s samples.
      x: inputs, shape (n, ...).
      repeats: invokes per sample per round; rounds: turns.
      seed: the order of the files in each turn is shuffled with this seed.

    Returns:
      ``{name: Latency}``, each sample's time being its median over all its invokes.
    """
    rounds, repeats = check_int("rounds", rounds), check_int("repeats", repeats)
    if not models:
        return {}
    loaded = {name: model if isinstance(model, TFLiteModel)
              else load_interpreter(model, num_threads=num_threads, runtime=runtime)
              for name, model in models.items()}
    sizes = {name: model.batch_size for name, model in loaded.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"compare_latency times files of one batch size on the same samples; "
                         f"received batch sizes {sizes}")
    names = list(loaded)
    checked = [whole_batches(model, x, name) for name, model in loaded.items()]  # each file's shape
    batches = checked[0]  # one batch size, so the same batches for every file
    times = {name: np.empty((len(batches), rounds * repeats)) for name in names}
    order = np.random.default_rng(seed)
    for turn in range(rounds):
        for sample, batch in enumerate(batches):
            for index in order.permutation(len(names)):
                name = names[index]
                model = loaded[name]
                model.run_batch(batch)  # untimed: the file's weights back into the cache
                for repeat in range(repeats):
                    started = time.perf_counter()
                    model.run_batch(batch)
                    times[name][sample, turn * repeats + repeat] = time.perf_counter() - started
    return {name: Latency(np.median(t, axis=1)) for name, t in times.items()}
