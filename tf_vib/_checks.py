"""The library's argument checks: each error names the argument, the value received and
what would be accepted, and is raised before any training or conversion starts.

Every check raises `BadArgument`, which is both a ``TypeError`` and a ``ValueError``: a
wrong type and a wrong value are the same mistake to the caller (an argument outside
what is accepted), and code that catches either keeps working.
"""

import importlib
import numbers
import os
import pathlib

import numpy as np

__all__ = [
    "BadArgument",
    "check_int",
    "check_float",
    "check_dataset",
    "optional",
    "check_fraction",
    "check_seed",
    "check_choice",
    "check_bool",
    "check_number",
    "check_rate",
    "check_units",
    "check_size",
    "check_existing_dir",
    "check_checkpoint_dir",
    "require_module",
]


class BadArgument(TypeError, ValueError):
    """An argument outside what is accepted (its type or its value)."""


def check_int(name, value, minimum=1, *, maximum=None, allow=()):
    """An integer in ``[minimum, maximum]`` (bools refused), or one of the integers in ``allow``
    (which may hold None: None is then accepted and returned)."""
    if value is None and None in allow:
        return None
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if integral and ((value >= minimum and (maximum is None or value <= maximum)) or value in allow):
        return int(value)
    bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    extra = "".join(f" or {a}" for a in allow)
    raise BadArgument(f"`{name}` must be an integer {bound}{extra}; received {value!r}")


def check_float(name, value, *, low=0.0, allow_low=False, high=None, allow_high=False):
    """A finite real number above ``low`` (or equal, with ``allow_low``) and below ``high``."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    if real and (low is None or value > low or (allow_low and value == low)) and (
        high is None or value < high or (allow_high and value == high)
    ):
        return float(value)
    bounds = []
    if low is not None:
        bounds.append(f"{'>=' if allow_low else '>'} {low:g}")
    if high is not None:
        bounds.append(f"{'<=' if allow_high else '<'} {high:g}")
    bound = (" " + " and ".join(bounds)) if bounds else ""
    raise BadArgument(f"`{name}` must be a finite number{bound}; received {value!r}")


def check_dataset(name, value, *, allow_none=False):
    """A batched ``tf.data.Dataset`` of ``(x, y)``."""
    from tf_vib._keras import tf

    if value is None and allow_none:
        return None
    if not isinstance(value, tf.data.Dataset):
        raise BadArgument(
            f"`{name}` must be a batched tf.data.Dataset of (x, y); received "
            f"{type(value).__name__}: {value!r:.60}"
        )
    return value


def optional(name, value, check):
    """``check(name, value)``, or None for None."""
    return None if value is None else check(name, value)


def check_fraction(name, value):
    """A float strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BadArgument(f"`{name}` must be a float in (0, 1); received {value!r}")
    if not 0.0 < float(value) < 1.0:
        raise BadArgument(f"`{name}` must be a float in (0, 1), exclusive; received {value!r}")
    return float(value)


def check_seed(value, name="seed"):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise BadArgument(f"`{name}` must be a non-negative integer; received {value!r}")
    return int(value)


def check_choice(name, value, choices):
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise BadArgument(f"`{name}` must be one of {valid}; received {value!r}")
    return value


def check_bool(name, value):
    """True or False (not 0, 1 or None)."""
    if not isinstance(value, bool):
        raise BadArgument(f"`{name}` must be True or False; received {value!r}")
    return value


def check_number(name, value, *, minimum=None, allow_equal=True):
    """A finite real number, at least ``minimum`` (above it, without ``allow_equal``): the
    masks' settings (`tf_vib.layers.GaussianMask`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BadArgument(f"`{name}` must be a number; received {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise BadArgument(f"`{name}` must be finite; received {value!r}")
    if minimum is not None and (value < minimum or (value == minimum and not allow_equal)):
        bound = f">= {minimum}" if allow_equal else f"> {minimum}"
        raise BadArgument(f"`{name}` must be {bound}; received {value!r}")
    return value


def check_rate(name, value, owner):
    """A dropout rate of the layer ``owner``: a number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise BadArgument(f"`{name}` of {owner} must be a number in [0, 1); received {name}={value!r}")
    return float(value)


def check_units(units, owner):
    """The ``units`` of the layer ``owner``: a positive integer."""
    if isinstance(units, bool) or not isinstance(units, int) or units <= 0:
        raise BadArgument(f"`units` of {owner} must be a positive integer; received units={units!r}")
    return units


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
        raise BadArgument(
            f"`{name}` must be an integer >= {minimum} or a pair (height, width) of such "
            f"integers; received {value!r}"
        )
    return int(pair[0]), int(pair[1])


def check_existing_dir(name, value):
    if not isinstance(value, (str, os.PathLike)):
        raise BadArgument(f"`{name}` must be a path to a folder; received {value!r}")
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


def check_checkpoint_dir(value):
    """``checkpoint_dir``: None, or a folder that exists or can be created, and is writable."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise BadArgument(f"`checkpoint_dir` must be None or a path to a folder; received {value!r:.80}")
    path = pathlib.Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise BadArgument(f"`checkpoint_dir` must be a folder (where compress() keeps its checkpoints); "
                          f"received {str(value)!r}, which is a file: pass a folder path")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise BadArgument(f"`checkpoint_dir` must be a folder compress() can write to; received "
                          f"{str(value)!r}, but {str(existing)!r} is not writable: pass a writable path")
    return path
