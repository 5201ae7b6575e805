"""Labelled sequences as TFRecord shards: written from arrays, read back as a streamed dataset.

Each record is a ``tf.train.Example`` with ``x`` (the sample flattened, float32) and ``y``
(its class index, int64). `read_tfrecords` parses them back into batches of
``(x, y)`` of the given sample shape, without reading the shards into memory: the
``tf.data.Dataset`` that ``compress()`` streams (docs/scaling.md).
"""

import os

import numpy as np

from tf_vib._checks import BadArgument, check_int
from tf_vib._keras import tf

__all__ = ["write_tfrecord", "read_tfrecords"]


def write_tfrecord(path, batches):
    """Write labelled samples to one TFRecord file, batch after batch, in order.

    Args:
      path: the file to write (str or ``os.PathLike``; its folder must exist).
      batches: an iterable of ``(x, y)`` array pairs, ``x`` of shape ``(n, ...)`` and ``y``
        ``n`` integer class indices: ``[(x, y)]`` for arrays in memory, or a generator that
        makes the data a chunk at a time (then no more than one chunk is in memory).

    Returns:
      The path written, as a str.

    Example:

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "train-00.tfrecord")
    >>> x, y = np.arange(12, dtype="float32").reshape(3, 2, 2), np.array([0, 1, 1])
    >>> dataset = read_tfrecords([write_tfrecord(path, [(x, y)])], (2, 2), batch_size=2)
    >>> [(batch_x.shape, batch_y.tolist()) for batch_x, batch_y in dataset.as_numpy_iterator()]
    [((2, 2, 2), [0, 1]), ((1, 2, 2), [1])]
    """
    if not isinstance(path, (str, os.PathLike)):
        raise BadArgument(f"`path` must be a file path (str or os.PathLike); received {path!r:.80}")
    path = os.fspath(path)
    with tf.io.TFRecordWriter(path) as writer:
        for index, pair in enumerate(batches):
            x, y = _checked_pair(index, pair)
            for sample, label in zip(x, y, strict=True):
                writer.write(tf.train.Example(features=tf.train.Features(feature={
                    "x": tf.train.Feature(float_list=tf.train.FloatList(value=sample.ravel())),
                    "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
                })).SerializeToString())
    return path


def _checked_pair(index, pair):
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise BadArgument(f"`batches[{index}]` must be a pair (x, y) of arrays; received "
                          f"{type(pair).__name__}: {pair!r:.80}")
    x, y = np.asarray(pair[0], dtype=np.float32), np.asarray(pair[1])
    if y.ndim != 1 or len(y) != len(x) or (len(y) and not np.issubdtype(y.dtype, np.integer)):
        raise BadArgument(f"`batches[{index}]`'s y must be {len(x)} integer class indices, one per "
                          f"sample of x {x.shape}; received y of shape {y.shape} and dtype {y.dtype}")
    return x, y


def read_tfrecords(paths, sample_shape, batch_size=32):
    """A ``tf.data.Dataset`` of ``(x, y)`` batches parsed from `write_tfrecord` files, in order.

    Args:
      paths: the files (a list of paths), read one after the other.
      sample_shape: the shape of one sample of ``x`` (e.g. ``(steps, features)``).
      batch_size: int >= 1, samples per batch (the last batch may be smaller).

    Returns:
      A dataset of ``(x, y)``: float32 ``(batch, *sample_shape)`` and int64 ``(batch,)``; its
      cardinality is unknown (it is not counted or read before it is iterated).
    """
    if isinstance(paths, (str, os.PathLike)) or not all(isinstance(p, (str, os.PathLike)) for p in paths):
        raise BadArgument(f"`paths` must be a list of file paths; received {paths!r:.80}")
    if not isinstance(sample_shape, (tuple, list)) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in sample_shape):
        raise BadArgument(f"`sample_shape` must be a tuple of integers >= 1; received {sample_shape!r}")
    batch_size = check_int("batch_size", batch_size)
    shape = tuple(sample_shape)
    spec = {"x": tf.io.FixedLenFeature([int(np.prod(shape))], tf.float32),
            "y": tf.io.FixedLenFeature([], tf.int64)}

    def parse(records):
        parsed = tf.io.parse_example(records, spec)
        return tf.reshape(parsed["x"], (-1, *shape)), parsed["y"]

    return tf.data.TFRecordDataset([os.fspath(p) for p in paths]).batch(batch_size).map(parse)
