"""compress()'s data: arrays from tuples, lists, dicts or datasets, checked against the model.

Every check runs before training and names the argument, the value received and what is
accepted: shapes per input, dtypes (token ids against their Embedding), labels against the
model's outputs and the loss (converted where that is unambiguous), NaN, ragged sequences.
"""

import numpy as np

from tf_vib._graph import tensor_users
from tf_vib._keras import keras, tf
from tf_vib.compress._training import loss_kind, loss_name

__all__ = ["num_samples", "take", "as_arrays", "is_batched", "in_model_order", "checked", "check_data", "check_inputs", "labels_of", "stratified_holdout"]


def num_samples(x):
    """The number of samples in ``x``: an array, or a tuple, list or dict of arrays."""
    return len(tf.nest.flatten(x)[0])


def take(x, index):
    """Rows ``index`` of every array in ``x`` (an array, or a tuple, list or dict of arrays)."""
    return tf.nest.map_structure(lambda a: a[index], x)


def _pack(items):
    """One array for a one-input (one-output) model, else a tuple in model order."""
    return items[0] if len(items) == 1 else tuple(items)


def _subject(argument, kind, names, index):
    """How errors name inputs or labels, and whether the name is plural: "`train_data` inputs",
    "`train_data` input 'tokens'", "`train_data` labels of output 'flag'"."""
    if len(names) == 1:
        return f"`{argument}` {kind}s", True
    if kind == "label":
        return f"`{argument}` labels of output {names[index]!r}", True
    return f"`{argument}` {kind} {names[index]!r}", False


def _first(mask):
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _in_model_order(value, argument, names, kind):
    """The parts of ``value`` (arrays or specs, one per model input or output) in model order.

    One part: the value itself (a list of several is a list of samples), a 1-list or a
    1-dict. Several: a list/tuple in model order or a dict keyed by the model's names.
    """
    many = f"the model has {len(names)} {kind}s ({', '.join(names)})"
    if isinstance(value, dict):
        if sorted(value) != sorted(names):
            raise ValueError(f"`{argument}` gives {kind}s keyed {sorted(value)}, but {many}: key "
                             "them by these names")
        return [value[name] for name in names]
    if isinstance(value, (list, tuple)) and (len(names) > 1 or len(value) == 1):
        if len(value) != len(names):
            raise ValueError(f"`{argument}` gives {len(value)} {kind} array{'s' * (len(value) != 1)}, "
                             f"but {many}: pass one per {kind}, as a list in that order or a dict "
                             "keyed by name")
        return list(value)
    if len(names) > 1:
        raise ValueError(f"`{argument}` gives one {kind} array, but {many}: pass one per {kind}, "
                         "as a list in that order or a dict keyed by name")
    return [value]


def _as_array(value, subject):
    try:
        array = np.asarray(value)
        ragged = array.dtype == object and not any(isinstance(s, str) for s in array.flat)
    except ValueError:  # NumPy refuses sequences of different shapes
        ragged = True
    if ragged:
        try:
            lengths = sorted({len(s) for s in value})
            shown = f" ({lengths[0]} to {lengths[-1]} steps)"
        except TypeError:
            shown = ""
        raise ValueError(
            f"{subject} are {len(value)} sequences of different shapes{shown}: compress() takes "
            "one array of shape (n, time, ...). Pad them with tf_vib.datasets.pad_sequences"
            "(sequences) (aeon's series are (channels, time): pass [s.T for s in x]); a Masking "
            "layer, or an Embedding with mask_zero=True, lets the model skip the padding"
        )
    return array


def _weights_refused(argument, names):
    nested = f"; a model with {len(names)} inputs takes them nested: ((x1, x2), y)" if len(names) > 1 else ""
    return (f"`{argument}` holds (x, y, sample_weight) or three parts: compress() takes (x, y) "
            "without sample weights (its fine-tuning and distillation train on (x, y) alone, so "
            "weights would count in one stage and not the next); repeat or resample samples to "
            f"weight them{nested}")


def as_arrays(data, argument, model):
    """``(x, y)`` NumPy arrays in model order from an ``(x, y)`` tuple or a ``tf.data.Dataset``.

    ``x`` holds one array per model input: the array itself for a one-input model, else a
    list/tuple in ``model.inputs`` order or a dict keyed by input name; ``y`` holds one per
    output the same way. Both are returned as an array, or a tuple in model order. A dataset
    whose inputs have the model's ranks is taken as batched, one rank lower as unbatched;
    compress() streams a dataset instead (`_stream.make_stream`): only a direct call reads
    one whole. Sample weights are refused.
    """
    inputs, outputs = model.input_names, model.output_names
    if isinstance(data, tf.data.Dataset):
        join = np.concatenate if is_batched(data, argument, model) else np.stack
        elements = list(data.as_numpy_iterator())
        if not elements:
            raise ValueError(f"`{argument}` is an empty dataset")
        parts = [in_model_order(e, argument, model) for e in elements]
        try:
            x = [join([p[0][i] for p in parts]) for i in range(len(inputs))]
            y = [join([p[1][i] for p in parts]) for i in range(len(outputs))]
        except ValueError:  # e.g. padded_batch: each batch padded to its own length
            raise ValueError(f"`{argument}` yields elements (or batches) of different shapes: "
                             "compress() joins them into one array, so pad every sequence to one "
                             "length (e.g. tf_vib.datasets.pad_sequences)") from None
    elif isinstance(data, (tuple, list)) and len(data) == 3:
        raise ValueError(_weights_refused(argument, inputs))
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x = [_as_array(a, _subject(argument, "input", inputs, i)[0])
             for i, a in enumerate(_in_model_order(data[0], argument, inputs, "input"))]
        y = [_as_array(a, _subject(argument, "label", outputs, i)[0])
             for i, a in enumerate(_in_model_order(data[1], argument, outputs, "output"))]
    else:
        raise TypeError(
            f"`{argument}` must be an (x, y) tuple of arrays or a tf.data.Dataset of (x, y); "
            f"received {type(data).__name__}"
        )
    return checked(x, y, argument, inputs)


def is_batched(data, argument, model):
    """Whether ``data``, a ``tf.data.Dataset`` of (x, y), yields batches (its inputs have the
    model's ranks) or single samples (one rank lower); anything else is refused."""
    inputs, outputs = model.input_names, model.output_names
    spec = data.element_spec
    if isinstance(spec, tuple) and len(spec) == 3:
        raise ValueError(_weights_refused(argument, inputs))
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise ValueError(f"`{argument}` must yield (x, y) pairs; its elements are {spec}")
    x_spec = _in_model_order(spec[0], argument, inputs, "input")
    y_spec = _in_model_order(spec[1], argument, outputs, "output")
    for part in x_spec + y_spec:
        if not isinstance(part, tf.TensorSpec) or part.shape.rank is None:
            raise ValueError(f"`{argument}` yields {part}: compress() takes dense tensors of a "
                             "known rank (pad sequences to one length, e.g. with "
                             "tf_vib.datasets.pad_sequences)")
    ranks = [s.shape.rank for s in x_spec]
    expected = [len(t.shape) for t in model.inputs]
    if ranks not in (expected, [r - 1 for r in expected]):
        def show(r):
            return r[0] if len(r) == 1 else r

        raise ValueError(
            f"`{argument}` yields inputs of rank {show(ranks)}; the model takes rank "
            f"{show(expected)} (batched) or {show([r - 1 for r in expected])} (unbatched) elements"
        )
    return ranks == expected


def in_model_order(element, argument, model):
    """An (x, y) element as two lists of parts in model order (inputs, outputs)."""
    return (_in_model_order(element[0], argument, model.input_names, "input"),
            _in_model_order(element[1], argument, model.output_names, "output"))


def checked(x, y, argument, names):
    """Lists ``x`` and ``y`` of arrays with one row per sample, numeric and finite inputs."""
    counts = [a.shape[0] if a.ndim else 1 for a in x + y]
    if len(set(counts[: len(x)])) > 1:
        raise ValueError(f"`{argument}` has inputs of {counts[: len(x)]} samples ({', '.join(names)}); "
                         "every input needs one row per sample")
    if len(set(counts)) > 1:
        raise ValueError(
            f"`{argument}` has {counts[0]} inputs but {counts[len(x)]} labels; they must match"
        )
    if counts[0] == 0:
        raise ValueError(f"`{argument}` holds no samples")
    for index, a in enumerate(x):
        subject, plural = _subject(argument, "input", names, index)
        if not np.issubdtype(a.dtype, np.number):
            raise TypeError(f"{subject} must be numeric; received dtype {a.dtype}")
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            bad = ~np.isfinite(a)
            raise ValueError(
                f"{subject} {'contain' if plural else 'contains'} {int(bad.sum())} NaN or infinite "
                f"values (first at index {_first(bad)}); clean or impute them before compressing"
            )
    return _pack(x), _pack(y)


def check_data(model, x, y, argument, loss=None):
    """Inputs and labels that fit the model; labels converted to what ``loss`` takes.

    Each input must have its model input's shape; an integer model input, or one read by an
    ``Embedding``, takes integer values (floats holding integers are cast to the input's
    dtype; integer data keep theirs), within ``[0, input_dim)`` of every Embedding reading it.
    Each output's labels are checked by `labels_of`.

    Args:
      model: the tf_keras model.
      x, y: as returned by `as_arrays`.
      argument: the argument's name, for errors.
      loss: the resolved loss (`resolve_loss`), one for every output or one per output.

    Returns:
      ``(x, y, labels, notes)``: ``y`` in the form the loss takes, ``labels`` the integer
      class labels (an array, or a tuple per output), ``notes`` what was converted.
    """
    outputs = model.output_names
    x = check_inputs(model, x, argument)
    losses = (loss if isinstance(loss, (list, tuple)) else
              [loss.get(name) for name in outputs] if isinstance(loss, dict) else [loss] * len(outputs))
    ys, labels, notes = [], [], []
    for index, (target, tensor) in enumerate(zip(tf.nest.flatten(y), model.outputs, strict=True)):
        subject = _subject(argument, "label", outputs, index)[0]
        target, classes, note = labels_of(target, tuple(tensor.shape), subject, losses[index])
        ys.append(target)
        labels.append(classes)
        notes += [note] if note else []
    return x, _pack(ys), _pack(labels), notes


def check_inputs(model, x, argument):
    """Each input against its model input: shape, dtype, token ids (see `check_data`)."""
    users = tensor_users(model)
    return _pack([_fit_input(a, tensor, argument, model.input_names, i, users)
                  for i, (a, tensor) in enumerate(zip(tf.nest.flatten(x), model.inputs, strict=True))])


def _fit_input(a, tensor, argument, names, index, users):
    subject, plural = _subject(argument, "input", names, index)
    expected = tuple(tensor.shape)
    if a.ndim != len(expected) or any(e is not None and e != s for e, s in zip(expected[1:], a.shape[1:], strict=True)):
        hint = ""
        if a.ndim == 3 and a.shape[1:] == expected[1:][::-1]:
            hint = " (time and features swapped? aeon gives (n, channels, time): x.transpose(0, 2, 1))"
        raise ValueError(
            f"{subject} {'have' if plural else 'has'} shape {a.shape}, but the model expects "
            f"(batch, {', '.join('None' if e is None else str(e) for e in expected[1:])}){hint}"
        )
    dtype = tf.as_dtype(tensor.dtype)
    embeddings = [n.layer for n in users.get(id(tensor), []) if isinstance(n.layer, keras.layers.Embedding)]
    if not (dtype.is_integer or embeddings):
        return a
    reader = f"the Embedding {embeddings[0].name!r}" if embeddings else f"the model's {dtype.name} input"
    if np.issubdtype(a.dtype, np.floating):
        fraction = a != np.round(a)
        if fraction.any():
            first = _first(fraction)
            raise ValueError(
                f"{subject} {'hold' if plural else 'holds'} non-integer values ({a[first]:g} at "
                f"index {first}), but {reader} reads token ids: pass integer ids"
            )
        if dtype.is_integer:
            a = a.astype(dtype.as_numpy_dtype)
    for layer in embeddings:
        low, high = a.min(), a.max()
        if low < 0 or high >= layer.input_dim:
            raise ValueError(
                f"{subject} {'hold' if plural else 'holds'} token ids in [{low:g}, {high:g}], but the "
                f"Embedding {layer.name!r} reading them has input_dim={layer.input_dim}: ids must "
                f"lie in [0, {layer.input_dim - 1}]"
            )
    return a


def labels_of(y, output_shape, subject="`y` labels", loss=None):
    """Labels checked against a model output of ``output_shape`` and converted for ``loss``.

    Accepted: class indices of the output's shape without its last axis (``(n,)``, or
    ``(n, T)`` for a per-step output of shape ``(n, T, C)``), optionally with a last axis of
    1, or one-hot rows of the output's shape; 0/1 labels for a one-unit (sigmoid) output.
    One-hot rows become indices for a sparse loss, indices one-hot rows for a categorical or
    binary one; soft rows with a sparse loss, or a one-unit output with a softmax loss, are
    refused.

    Args:
      y: the labels, an array.
      output_shape: the output's shape, batch axis first.
      subject: how errors name the labels, e.g. "`train_data` labels".
      loss: the resolved loss of this output, or None (no conversion).

    Returns:
      ``(y, labels, note)``: ``y`` as the loss takes it, ``labels`` the int64 class labels
      (the output's shape without its last axis), ``note`` a line on the conversion or None.
    """
    y = np.asarray(y)
    step, classes = tuple(output_shape[1:-1]), output_shape[-1]
    if not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"{subject} must be integer class indices or one-hot rows; received dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating) and np.isnan(y).any():
        raise ValueError(f"{subject} contain {int(np.isnan(y).sum())} NaN values (first at index "
                         f"{_first(np.isnan(y))}); drop or label those samples")

    def fits(shape):
        return len(shape) == y.ndim - 1 and all(e is None or e == s for e, s in zip(shape, y.shape[1:], strict=True))

    kind, name = loss_kind(loss), loss_name(loss)
    one_hot = classes != 1 and fits(step + (classes,))
    if not (one_hot or fits(step) or fits(step + (1,))):
        dims = ", ".join(["n"] + [str(s) for s in step])
        per_step = ": it predicts one class per step, so give one label per step" if step else ""
        raise ValueError(f"{subject} have shape {y.shape}; expected ({dims}) class indices or "
                         f"({dims}, {classes}) one-hot rows, as the model's output has shape "
                         f"{output_shape}{per_step}")
    if one_hot:
        labels = np.argmax(y, axis=-1)
        if kind != "sparse":
            return y, labels, None
        if not (np.isin(y, (0, 1)).all() and (y.sum(axis=-1) == 1).all()):
            raise ValueError(f"{subject} are rows of {classes} values that are not one-hot (soft or "
                             f"smoothed labels?), but the loss {name} takes class indices: use "
                             "CategoricalCrossentropy for soft labels")
        return labels, labels, f"one-hot labels converted to class indices for the loss {name}"
    if classes == 1 and kind in ("sparse", "categorical"):
        raise ValueError(f"the loss {name} needs an output of 2 or more classes, but the model's "
                         f"output has 1 unit ({subject} of shape {y.shape}): use BinaryCrossentropy "
                         "for 0/1 labels and a sigmoid output")
    flat = y.reshape(y.shape[: 1 + len(step)])
    if np.any(flat != np.round(flat)):
        raise ValueError(f"{subject} must be integer class indices; received dtype {flat.dtype} with "
                         f"non-integer values (first at index {_first(flat != np.round(flat))})")
    top = max(classes, 2) - 1
    low, high = flat.min(), flat.max()
    if low < 0 or high > top:
        raise ValueError(
            f"{subject} range over [{low:g}, {high:g}], but the model has {classes} outputs: "
            f"labels must lie in [0, {top}]"
        )
    labels = flat.astype(np.int64)
    if classes == 1:  # a sigmoid unit: 0/1 labels of the output's shape
        return labels.reshape(labels.shape + (1,)).astype(np.float32), labels, None
    if kind in ("categorical", "binary"):
        return (np.eye(classes, dtype=np.float32)[labels], labels,
                f"class indices converted to one-hot rows for the loss {name}")
    return y, labels, None


def stratified_holdout(labels, fraction, seed):
    """Indices (train, held out) with about ``fraction`` of every class held out.

    Per-step labels ``(n, T)`` are stratified by each sequence's most frequent class, several
    outputs by the first.
    """
    labels = tf.nest.flatten(labels)[0]
    if labels.ndim > 1:
        labels = np.array([np.bincount(row).argmax() for row in labels.reshape(len(labels), -1)])
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = int(round(fraction * len(members)))
        if len(members) > 1:
            count = min(max(count, 1), len(members) - 1)
        else:
            count = 0
        held.extend(members[:count])
    held = np.sort(np.asarray(held, dtype=np.int64))
    train = np.setdiff1d(np.arange(len(labels)), held)
    return train, held
