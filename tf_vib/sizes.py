"""Size accounting for compressed models, as Deep Compression's tables count it.

Han, Mao and Dally, "Deep Compression" (ICLR 2016), store a pruned and clustered weight
tensor as a codebook of shared float32 values, one cluster index per stored weight
(Huffman-coded), and the positions of the surviving weights as relative indices: the
gap to the previous stored weight in ``gap_bits`` bits, with a filler zero inserted
when a gap exceeds ``2**gap_bits`` (their Fig. 2). ``clustered_storage`` counts every
one of these bits; ``gzip_size`` and ``nonzero_params`` give the simpler figures.
"""

import dataclasses
import gzip
import heapq
import math

import numpy as np

from tf_vib._checks import check_int
from tf_vib._keras import keras

__all__ = [
    "StorageReport",
    "TensorStorage",
    "clustered_storage",
    "gzip_size",
    "huffman_bits",
    "huffman_code_lengths",
    "nonzero_params",
]

ENCODINGS = ("dense-codebook", "sparse-codebook", "dense-float32", "sparse-float32")


def nonzero_params(model):
    """Number of non-zero values in all of ``model``'s weights (trainable or not)."""
    _require_layer(model)
    return int(sum(np.count_nonzero(w) for w in model.get_weights()))


def gzip_size(data):
    """Bytes of ``data`` after ``gzip`` at level 9 (no timestamp, so the size is reproducible).

    Args:
      data: ``bytes`` (e.g. a ``.tflite`` file's content), a NumPy array, or a list of
        arrays (e.g. ``model.get_weights()``), taken as their raw bytes in C order.

    Returns:
      int, the compressed size in bytes.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    elif isinstance(data, np.ndarray):
        raw = np.ascontiguousarray(data).tobytes()
    elif isinstance(data, (list, tuple)) and all(isinstance(a, np.ndarray) for a in data):
        raw = b"".join(np.ascontiguousarray(a).tobytes() for a in data)
    else:
        raise TypeError(
            "`data` must be bytes, a NumPy array or a list of NumPy arrays; received "
            f"{type(data).__name__}: {data!r:.60}"
        )
    return len(gzip.compress(raw, compresslevel=9, mtime=0))


def huffman_code_lengths(counts):
    """Code length in bits of each symbol of an optimal (Huffman) prefix code.

    Args:
      counts: 1-D sequence of non-negative integer symbol frequencies.

    Returns:
      int64 array of the same length; 0 for symbols that never occur. A stream with a
      single distinct symbol is charged 1 bit per symbol.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or (counts.size and (counts.min() < 0 or not np.all(counts == np.floor(counts)))):
        raise ValueError(f"`counts` must be a 1-D sequence of non-negative integers; received {counts!r:.80}")
    lengths = np.zeros(len(counts), np.int64)
    used = np.flatnonzero(counts)
    if len(used) == 1:
        lengths[used] = 1
    # Each heap entry: (weight, tie-breaker, symbols below this node); merging deepens them all.
    heap = [(int(counts[i]), int(i), [int(i)]) for i in used]
    heapq.heapify(heap)
    while len(heap) > 1:
        w1, t1, s1 = heapq.heappop(heap)
        w2, t2, s2 = heapq.heappop(heap)
        lengths[s1 + s2] += 1
        heapq.heappush(heap, (w1 + w2, min(t1, t2), s1 + s2))
    return lengths


def huffman_bits(counts):
    """Total bits of a stream Huffman-coded from its own histogram: ``sum(count * length)``."""
    counts = np.asarray(counts)
    return int(np.sum(counts.astype(np.int64) * huffman_code_lengths(counts)))


@dataclasses.dataclass(frozen=True)
class TensorStorage:
    """How one weight tensor is stored, and its bits.

    ``encoding`` is the cheapest of: ``dense-codebook`` (an index per weight),
    ``sparse-codebook`` (an index and a gap per non-zero weight or filler),
    ``dense-float32`` and ``sparse-float32`` (32-bit values instead of indices, for
    tensors that are not clustered). For float32 encodings ``index_bits`` and
    ``huffman_bits`` count the 32-bit values and ``n_clusters`` is 0.
    """

    name: str
    size: int
    nonzero: int
    n_clusters: int
    encoding: str
    codebook_bits: int
    index_bits: int
    huffman_bits: int
    sparse_index_bits: int

    @property
    def total_bits(self):
        return self.codebook_bits + self.huffman_bits + self.sparse_index_bits


@dataclasses.dataclass(frozen=True)
class StorageReport:
    """Storage of a whole model (``clustered_storage``); per-tensor rows in ``tensors``.

    ``total_bytes`` = ceil((codebook_bits + huffman_bits + sparse_index_bits) / 8);
    ``index_bits`` is the same stream with fixed-width indices, before Huffman coding.
    """

    dense_bytes_float32: int
    nonzero: int
    codebook_bits: int
    index_bits: int
    huffman_bits: int
    sparse_index_bits: int
    total_bytes: int
    tensors: tuple = ()

    @property
    def compression_ratio(self):
        """``dense_bytes_float32 / total_bytes``."""
        return self.dense_bytes_float32 / max(self.total_bytes, 1)


def _relative_index_entries(flat, gap_bits):
    """Positions of the non-zero weights, and the filler zeros the relative indices need."""
    positions = np.flatnonzero(flat)
    gaps = np.diff(positions, prepend=-1)
    span = 2**gap_bits
    fillers = (gaps - 1) // span
    return positions, int(fillers.sum())


def _codebook_bits(k, index_bits):
    bits = index_bits if index_bits is not None else max(1, math.ceil(math.log2(max(k, 1))))
    return bits if k <= 2**bits else None


def _tensor_storage(name, values, index_bits, gap_bits):
    flat = np.asarray(values, np.float32).ravel()
    size, nonzero = flat.size, int(np.count_nonzero(flat))
    _, dense_counts = np.unique(flat, return_counts=True)
    positions, fillers = _relative_index_entries(flat, gap_bits)
    entries = len(positions) + fillers
    _, nz_counts = np.unique(flat[positions], return_counts=True)
    sparse_counts = np.append(nz_counts, fillers) if fillers else nz_counts
    options = [
        TensorStorage(name, size, nonzero, 0, "dense-float32", 0, 32 * size, 32 * size, 0),
    ]
    if nonzero < size:
        options.append(TensorStorage(name, size, nonzero, 0, "sparse-float32", 0,
                                     32 * entries, 32 * entries, gap_bits * entries))
    bits = _codebook_bits(len(dense_counts), index_bits)
    if bits is not None:
        options.append(TensorStorage(name, size, nonzero, len(dense_counts), "dense-codebook",
                                     32 * len(dense_counts), bits * size,
                                     huffman_bits(dense_counts), 0))
    bits = _codebook_bits(len(sparse_counts), index_bits)
    if nonzero < size and bits is not None:
        options.append(TensorStorage(name, size, nonzero, len(sparse_counts), "sparse-codebook",
                                     32 * len(sparse_counts), bits * entries,
                                     huffman_bits(sparse_counts), gap_bits * entries))
    return min(options, key=lambda o: (o.total_bits, ENCODINGS.index(o.encoding)))


def clustered_storage(model, *, index_bits=None, gap_bits=5):
    """Bits needed to store a pruned and/or clustered model (Deep Compression, docs/method.md section 5).

    Per weight tensor, with ``k`` distinct stored values (the clusters, plus 0 where zeros
    are stored), the cheapest encoding among those in ``TensorStorage`` is counted:

    - codebook: ``k * 32`` bits;
    - indices: ``ceil(log2 k)`` bits (or ``index_bits``) per stored entry, and the same
      entries Huffman-coded from their own histogram (``huffman_bits``, what is stored);
    - sparse formats: per non-zero weight a ``gap_bits`` relative index to the previous
      one; a gap longer than ``2**gap_bits`` costs a filler zero entry per
      ``2**gap_bits`` positions (Han et al. use 5 bits for fully connected layers).

    Args:
      model: a tf_keras model, or a dict ``{name: array}`` or list of arrays.
      index_bits: int in [1, 32] or None (default: just enough bits for each tensor's
        ``k``). A tensor with more than ``2**index_bits`` values is stored as float32.
      gap_bits: int in [1, 16], default 5.

    Returns:
      A ``StorageReport``.
    """
    tensors = _named_arrays(model)
    if index_bits is not None:
        index_bits = check_int("index_bits", index_bits, 1, maximum=32)
    gap_bits = check_int("gap_bits", gap_bits, 1, maximum=16)
    rows = tuple(_tensor_storage(name, w, index_bits, gap_bits) for name, w in tensors)
    total = sum(r.total_bits for r in rows)
    return StorageReport(
        dense_bytes_float32=4 * sum(r.size for r in rows),
        nonzero=sum(r.nonzero for r in rows),
        codebook_bits=sum(r.codebook_bits for r in rows),
        index_bits=sum(r.index_bits for r in rows),
        huffman_bits=sum(r.huffman_bits for r in rows),
        sparse_index_bits=sum(r.sparse_index_bits for r in rows),
        total_bytes=math.ceil(total / 8),
        tensors=rows,
    )




def _require_layer(model):
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"`model` must be a tf_keras Model or Layer; received {model!r:.80}")


def _named_arrays(model):
    if isinstance(model, keras.layers.Layer):
        return [(w.name, w.numpy()) for w in model.weights]
    if isinstance(model, dict):
        items = list(model.items())
    elif isinstance(model, (list, tuple)):
        items = [(f"weight_{i}", w) for i, w in enumerate(model)]
    else:
        items = None
    if items is None or not all(isinstance(w, np.ndarray) for _, w in items):
        raise TypeError(
            "`model` must be a tf_keras Model, a dict {name: array} or a list of NumPy "
            f"arrays; received {type(model).__name__}: {model!r:.60}"
        )
    return items
