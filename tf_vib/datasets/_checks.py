"""Argument checks shared by the data set loaders: each error names the argument,
the value received and what would be accepted."""

import importlib
import numbers
import os
import pathlib

__all__ = [
    "check_int",
    "check_fraction",
    "check_seed",
    "check_choice",
    "check_size",
    "check_existing_dir",
    "require_module",
]


def check_int(name, value, *, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer >= {minimum}; received {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; received {value!r}")
    return int(value)


def check_fraction(name, value):
    """A float strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a float in (0, 1); received {value!r}")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"`{name}` must be a float in (0, 1), exclusive; received {value!r}")
    return float(value)


def check_seed(value, name="seed"):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be a non-negative integer; received {value!r}")
    if value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer; received {value!r}")
    return int(value)


def check_choice(name, value, choices):
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {valid}; received {value!r}")
    return value


def check_size(name, value, *, minimum=1):
    """An image size: an int (square) or a pair (height, width); returns (height, width)."""
    pair = (value, value) if isinstance(value, numbers.Integral) else value
    if (
        isinstance(value, bool)
        or not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair)
        or min(pair) < minimum
    ):
        raise ValueError(
            f"`{name}` must be an integer >= {minimum} or a pair (height, width) of such "
            f"integers; received {value!r}"
        )
    return int(pair[0]), int(pair[1])


def check_existing_dir(name, value):
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"`{name}` must be a path to a folder; received {value!r}")
    path = pathlib.Path(value).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"`{name}` must be an existing folder; received {str(value)!r}")
    return path


def require_module(module, *, purpose, package):
    """Import ``module``, or explain which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs the `{package}` package, which is not installed. Install the "
            f"data set extra: pip install 'tf-vib[datasets]' (or pip install {package})."
        ) from error
