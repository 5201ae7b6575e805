"""compress()'s streamed data: a ``tf.data.Dataset`` kept a dataset, never read into NumPy.

A dataset argument becomes a `Stream`: the batched dataset (an unbatched one batched by
``batch_size``) mapped through the same checks and label conversions as arrays get
(`_data.checked`, `check_data` or `check_targets`), batch by batch. Before any training the
first ``SAMPLE_BATCHES`` batches are checked (the log says how many samples); a problem met
later in the stream is recorded on the stream (`Stream.problem`) and stops the run with the
same message (`raise_stream_problem`). Samples and batches are counted in one pass over the
raw data (no checks, nothing kept) when the dataset's cardinality does not give them.
"""

import dataclasses

import numpy as np

from tf_vib._checks import BadArgument
from tf_vib._keras import tf
from tf_vib.compress._data import in_model_order, is_batched, num_samples

__all__ = ["SAMPLE_BATCHES", "Stream", "make_stream", "split_stream", "samples_of", "batches_of", "fit_data",
           "raise_stream_problem"]

#: Batches of a dataset argument checked before training (label range, NaN, shapes, dtypes);
#: the rest is checked batch by batch as it streams.
SAMPLE_BATCHES = 8


@dataclasses.dataclass
class Stream:
    """A dataset argument, streamed: ``dataset`` yields checked, converted ``(x, y)`` batches
    in model order; ``num_samples`` and ``steps`` (batches) per pass; ``checked`` samples
    were checked before training; ``sample`` holds their (x, y) arrays (for the resume
    digest); ``problem`` is the first error met while streaming, or None."""

    dataset: object
    argument: str
    num_samples: int
    steps: int
    checked: int
    sample: list
    problem: Exception | None = None


def samples_of(part):
    """The number of samples in ``part``: an (x, y) pair of arrays or a `Stream`."""
    return part.num_samples if isinstance(part, Stream) else num_samples(part[0])


def batches_of(part, batch_size):
    """Batches per epoch of ``part``: a `Stream`'s own batching, else ``batch_size``."""
    return part.steps if isinstance(part, Stream) else int(np.ceil(num_samples(part[0]) / batch_size))


def fit_data(train, val, batch_size):
    """Keras ``fit``'s data arguments for ``train`` and ``val``: (x, y) arrays or `Stream`s."""
    if isinstance(val, Stream):
        kwargs = {"validation_data": val.dataset}
    else:
        kwargs = {"validation_data": val, "validation_batch_size": batch_size}
    if isinstance(train, Stream):
        kwargs["x"] = train.dataset
    else:
        kwargs.update(x=train[0], y=train[1], batch_size=batch_size)
    return kwargs


def raise_stream_problem(data, error):
    """Re-raise ``error`` (a TensorFlow error out of a dataset's checks) as the problem a
    stream recorded, when one did; otherwise return."""
    for part in (data.train, data.val, data.test):
        problem = getattr(part, "problem", None)
        if problem is not None:
            raise BadArgument(f"{problem} (met while streaming `{part.argument}`, after the first "
                              f"{part.checked} samples were checked before training)") from error


def _pack(items):
    return items[0] if len(items) == 1 else tuple(items)


def make_stream(data, argument, model, check, batch_size):
    """``data`` (a ``tf.data.Dataset`` of (x, y)) as a `Stream`.

    Args:
      check: ``check(x, y) -> (x, y, labels, notes)`` on one batch of arrays in model order
        (each a list of parts), raising the error the same arrays would get.
      batch_size: the batch of an unbatched dataset.

    Returns:
      ``(stream, notes)``: the label conversions made, and the line on what was checked.
    """
    if int(data.cardinality()) == tf.data.INFINITE_CARDINALITY:
        raise BadArgument(f"`{argument}` is an infinite tf.data.Dataset (a repeat() without a count): "
                          "compress() counts an epoch as one pass over it; pass a finite one, e.g. "
                          "dataset.take(n), and set the epochs with `epochs`")
    raw = data if is_batched(data, argument, model) else data.batch(batch_size)
    n_x = len(model.inputs)
    sample, notes = [], []
    for element in raw.take(SAMPLE_BATCHES).as_numpy_iterator():
        xs, ys = in_model_order(element, argument, model)
        x, y, _, converted = check([np.asarray(a) for a in xs], [np.asarray(a) for a in ys])
        sample.append((x, y))
        notes += [n for n in converted if n not in notes]
    if not sample:
        raise ValueError(f"`{argument}` is an empty dataset")
    flat = [tf.nest.flatten(x) + tf.nest.flatten(y) for x, y in sample]
    dtypes = [a.dtype for a in flat[0]]
    # An axis is fixed when the dataset's spec fixes it and the sampled batches agree on it:
    # one the spec leaves open (a padded_batch's length) may change in a later batch.
    spec = [list(s.shape) for s in tf.nest.flatten(in_model_order(raw.element_spec, argument, model))]
    shapes = [[None] + [d if all(f[i].shape[axis] == d for f in flat)
                        and not (axis < len(spec[i]) and spec[i][axis] is None) else None
                        for axis, d in enumerate(a.shape) if axis]
              for i, a in enumerate(flat[0])]
    stream = Stream(None, argument, 0, 0, sum(num_samples(x) for x, _ in sample), sample)

    def guard(*arrays):
        """One batch through the checks; a problem is kept on the stream for the message."""
        try:
            x, y, _, _ = check(list(arrays[:n_x]), list(arrays[n_x:]))
        except ValueError as error:  # BadArgument included
            if stream.problem is None:
                stream.problem = error
            raise
        return [np.asarray(a, dtype) for a, dtype in zip(tf.nest.flatten(x) + tf.nest.flatten(y), dtypes,
                                                          strict=True)]

    def checked_batch(x, y):
        xs, ys = in_model_order((x, y), argument, model)
        out = tf.numpy_function(guard, xs + ys, [tf.as_dtype(d) for d in dtypes], stateful=False)
        out = [tf.ensure_shape(t, s) for t, s in zip(out, shapes, strict=True)]
        return _pack(out[:n_x]), _pack(out[n_x:])

    stream.num_samples, stream.steps = _count(data, raw)
    # the count stated, so that Keras and the tfmot stages know an epoch's steps without a pass
    stream.dataset = raw.map(checked_batch).apply(tf.data.experimental.assert_cardinality(stream.steps))
    notes.append(f"checked the first {stream.checked} samples of {argument} ({len(sample)} batches) before "
                 f"training; the rest ({stream.num_samples} samples in all, {stream.steps} batches) is "
                 "checked batch by batch as it streams")
    return stream, notes


def _count(data, raw):
    """(samples, batches) per pass: from the cardinalities when known, else one pass over
    ``raw`` that keeps nothing."""
    batches = int(raw.cardinality())
    if raw is not data and batches >= 0 and int(data.cardinality()) >= 0:
        return int(data.cardinality()), batches
    first = lambda element: tf.nest.flatten(element)[0]  # noqa: E731
    samples, batches = raw.reduce((np.int64(0), np.int64(0)), lambda count, element: (
        count[0] + tf.cast(tf.shape(first(element))[0], tf.int64), count[1] + 1))
    return int(samples), int(batches)


def split_stream(data, fraction, argument="train_data"):
    """``(train, held out)`` datasets: the first ``fraction`` of ``data`` (elements, or batches
    of a batched dataset) held out with ``take``/``skip``. ``data`` must have a known
    cardinality; the hold-out is not stratified (a stream is not read ahead)."""
    count = int(data.cardinality())
    if count < 0:
        raise BadArgument(
            f"`{argument}` is a tf.data.Dataset of {'infinite' if count == tf.data.INFINITE_CARDINALITY else 'unknown'}"
            " cardinality (a TFRecordDataset, a filter, ...), so compress() cannot hold out "
            "`validation_fraction` of it: pass `validation_data` (a dataset or (x, y) arrays), or state "
            "its size with dataset.apply(tf.data.experimental.assert_cardinality(n))")
    if count < 2:
        raise BadArgument(f"`{argument}` yields {count} element{'s' * (count != 1)}: holding out "
                          "`validation_fraction` of it needs at least 2; pass `validation_data`")
    held = min(max(int(round(fraction * count)), 1), count - 1)
    return data.skip(held), data.take(held)
