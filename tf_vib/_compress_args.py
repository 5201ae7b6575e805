"""compress()'s argument checks and data preparation: errors name the argument and the value."""

import dataclasses

import numpy as np

from tf_vib.training import as_arrays, check_data, stratified_holdout

__all__ = ["Data", "prepare_data", "check_targets", "check_int", "check_float", "optional", "rank_or_energy"]


def check_int(name, value, minimum=0):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; received {value!r}")
    return int(value)


def check_float(name, value, *, low=0.0, allow_low=False, high=None):
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.number)) and np.isfinite(value)
    if not ok or value < low or (value == low and not allow_low) or (high is not None and value >= high):
        bound = f"{'>=' if allow_low else '>'} {low:g}" + ("" if high is None else f" and < {high:g}")
        raise ValueError(f"`{name}` must be a finite number {bound}; received {value!r}")
    return float(value)


def optional(name, value, check):
    return None if value is None else check(name, value)


def rank_or_energy(name, value):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return check_int(name, value, 1)
    return check_float(name, value, high=1.0 + 1e-12)


def check_targets(model, x, y, argument):
    """A regressor's or forecaster's data: inputs the model takes, finite numeric targets of
    its output's shape. Returns one stratum for every sample (the hold-out is then random)."""
    one_stratum = np.zeros(len(x), np.int64)
    check_data(model, x, one_stratum, argument)  # its input checks: there are no labels to check
    expected = tuple(model.output_shape[1:])
    shape = tuple(y.shape[1:])
    fits = len(shape) == len(expected) and all(e is None or e == a for e, a in zip(expected, shape, strict=True))
    if not (fits or (expected == (1,) and shape == ())):
        raise ValueError(f"`{argument}` targets have shape {y.shape}, but the model outputs "
                         f"(batch, {', '.join('None' if e is None else str(e) for e in expected)})")
    if not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"`{argument}` targets must be numbers; received dtype {y.dtype}")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"`{argument}` targets contain {int((~np.isfinite(y)).sum())} NaN or infinite values")
    return one_stratum


@dataclasses.dataclass
class Data:
    """compress()'s data: (x, y) pairs as given; ``labels_val`` are a classifier's validation
    labels (zeros, one stratum, for other models)."""

    train: tuple
    val: tuple
    labels_val: np.ndarray
    test: tuple | None


def prepare_data(model, train_data, validation_data, test_data, validation_fraction, seed, classifier=True):
    check = check_data if classifier else check_targets
    rank = len(model.input_shape) if not isinstance(model.input_shape, list) else 0
    x_train, y_train = as_arrays(train_data, "train_data", rank)
    labels_train = check(model, x_train, y_train, "train_data")
    if validation_data is not None:
        x_val, y_val = as_arrays(validation_data, "validation_data", rank)
        labels_val = check(model, x_val, y_val, "validation_data")
    else:
        fraction = check_float("validation_fraction", validation_fraction, high=1.0)
        keep, held = stratified_holdout(labels_train, fraction, seed)
        x_val, y_val, labels_val = x_train[held], y_train[held], labels_train[held]
        x_train, y_train = x_train[keep], y_train[keep]
    test = None
    if test_data is not None:
        x_test, y_test = as_arrays(test_data, "test_data", rank)
        check(model, x_test, y_test, "test_data")
        test = (x_test, y_test)
    return Data((x_train, y_train), (x_val, y_val), labels_val, test)
