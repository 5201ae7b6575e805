"""compress()'s data preparation (splits, checks against the model) and its own argument
checks; the generic ones are in `tf_vib._checks`. Errors name the argument and the value."""

import dataclasses

import numpy as np

from tf_vib._checks import check_float, check_int
from tf_vib._keras import tf
from tf_vib.compress._data import (
    as_arrays,
    check_data,
    check_inputs,
    checked,
    is_batched,
    num_samples,
    stratified_holdout,
    take,
)
from tf_vib.compress._stream import make_stream, split_stream

__all__ = ["Data", "prepare_data", "check_targets", "check_accuracy_drop", "rank_or_energy",
           "why_not_distilled"]


def check_accuracy_drop(value):
    """``max_accuracy_drop``: a fraction in [0, 1); 1 would mean "up to 100 points"."""
    drop = check_float("max_accuracy_drop", value, allow_low=True)
    if drop >= 1.0:
        raise ValueError(
            f"`max_accuracy_drop` is a fraction of accuracy (0.01 = one point), so it must be "
            f"< 1; received {value!r}, which would accept a drop of {100 * drop:g} points"
        )
    return drop


def why_not_distilled(model):
    """Why fine-tuning cannot distil from ``model``, or None: the distillation loss matches
    one softmax over 2 or more classes (a one-unit sigmoid has no class distribution to match)."""
    if len(model.outputs) > 1:
        return f"distillation is off: the model has {len(model.outputs)} outputs, and it takes one"
    if model.outputs[0].shape[-1] == 1:
        return ("distillation is off: it matches a softmax over 2 or more classes, and the model's "
                "output has one unit; fine-tuning trains on the labels alone")
    return None


def rank_or_energy(name, value):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return check_int(name, value, 1)
    return check_float(name, value, high=1.0 + 1e-12)


def check_targets(model, x, y, argument):
    """A regressor's or forecaster's data: inputs the model takes (`check_inputs`), finite
    numeric targets of each output's shape. Returns one stratum for every sample (the
    hold-out is then random)."""
    check_inputs(model, x, argument)
    for target, tensor in zip(tf.nest.flatten(y), model.outputs, strict=True):
        expected = tuple(tensor.shape[1:])
        shape = tuple(target.shape[1:])
        fits = len(shape) == len(expected) and all(e is None or e == a for e, a in zip(expected, shape, strict=True))
        if not (fits or (expected == (1,) and shape == ())):
            raise ValueError(f"`{argument}` targets have shape {target.shape}, but the model outputs "
                             f"(batch, {', '.join('None' if e is None else str(e) for e in expected)})")
        if not np.issubdtype(target.dtype, np.number):
            raise ValueError(f"`{argument}` targets must be numbers; received dtype {target.dtype}")
        if not np.all(np.isfinite(target)):
            raise ValueError(f"`{argument}` targets contain {int((~np.isfinite(target)).sum())} NaN or "
                             "infinite values")
    return np.zeros(num_samples(x), np.int64)


@dataclasses.dataclass
class Data:
    """compress()'s data in model order: ``train``, ``val`` and ``test`` each an (x, y) pair
    (``x`` an array, or a tuple per model input; ``y`` likewise per output) or, for a dataset
    argument, a `_stream.Stream`; ``labels_val`` the validation class labels of arrays (a
    classifier's; zeros, one stratum, for other models; None for a stream); ``notes`` say which
    labels were converted for the loss and what a stream's check before training read."""

    train: object
    val: object
    labels_val: object
    test: object
    notes: list = dataclasses.field(default_factory=list)


def prepare_data(model, train_data, validation_data, test_data, validation_fraction, seed, loss, *,
                 classifier=True, batch_size=32):
    """Every data argument read (`as_arrays`) and checked against the model and ``loss``
    (`check_data` for a classifier, `check_targets` otherwise) before any training; without
    ``validation_data``, a ``validation_fraction`` of the training samples (stratified by class
    for a classifier), the same rows of every input, is held out.

    A ``tf.data.Dataset`` is streamed instead (`_stream.make_stream`): checked on its first
    batches before training and batch by batch as it streams, never read into arrays; a
    hold-out from it is its first ``validation_fraction`` (`_stream.split_stream`)."""
    notes, lines = {}, []

    def check(x, y, argument):
        if classifier:
            return check_data(model, x, y, argument, loss)
        return x, y, check_targets(model, x, y, argument), []

    def read(data, argument):
        if isinstance(data, tf.data.Dataset):
            stream, converted = make_stream(
                data, argument, model, lambda x, y: check(*checked(x, y, argument, model.input_names), argument),
                batch_size)
            lines.append(converted.pop())
            labels, result = None, stream
        else:
            x, y = as_arrays(data, argument, model)
            x, y, labels, converted = check(x, y, argument)
            result = (x, y)
        for note in converted:
            notes.setdefault(note, []).append(argument)
        return result, labels

    if validation_data is None and isinstance(train_data, tf.data.Dataset):
        fraction = check_float("validation_fraction", validation_fraction, high=1.0)
        train_data, validation_data = split_stream(train_data, fraction)
        lines.append(f"validation data: the first {fraction:g} of train_data's "
                     f"{'batches' if is_batched(train_data, 'train_data', model) else 'samples'} "
                     "(a dataset is not stratified: shuffle it beforehand, once, for a fair split, and with "
                     "reshuffle_each_iteration=False, or the hold-out changes every epoch)")
    train, labels_train = read(train_data, "train_data")
    if validation_data is not None:
        val, labels_val = read(validation_data, "validation_data")
    else:
        x_train, y_train = train
        fraction = check_float("validation_fraction", validation_fraction, high=1.0)
        keep, held = stratified_holdout(labels_train, fraction, seed)
        val, labels_val = (take(x_train, held), take(y_train, held)), take(labels_train, held)
        train = (take(x_train, keep), take(y_train, keep))
    test = None
    if test_data is not None:
        test, _ = read(test_data, "test_data")
    lines = [f"{note} ({', '.join(arguments)})" for note, arguments in notes.items()] + lines
    return Data(train, val, labels_val, test, lines)
