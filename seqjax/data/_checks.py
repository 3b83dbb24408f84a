"""Argument checks shared by `seqjax.data` (NumPy only).

Every error names the function, the argument, what was expected and what was received, e.g.
``seqjax.data.windows: length must be an int >= 1; got 0``.
"""

from __future__ import annotations

import numbers

import numpy as np

PREFIX = "seqjax.data."


def where(fn: str) -> str:
    """The error-message prefix for the public function `fn`."""
    return fn if fn.startswith(PREFIX) else PREFIX + fn


def check_int(fn: str, name: str, value, *, minimum: int = 0) -> int:
    """`value` as a Python int >= `minimum`; bools and floats are a TypeError, smaller ints a ValueError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where(fn)}: {name} must be an int >= {minimum}; got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{where(fn)}: {name} must be an int >= {minimum}; got {value}")
    return value


def check_choice(fn: str, name: str, value, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        wanted = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{where(fn)}: {name} must be one of {wanted}; got {value!r}")
    return value


def check_bool(fn: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where(fn)}: {name} must be a bool; got {value!r} ({type(value).__name__})")
    return bool(value)


def as_array(fn: str, name: str, x) -> np.ndarray:
    """`x` as a NumPy array (no copy when it already is one)."""
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where(fn)}: {name} must be an array-like of numbers; got {type(x).__name__} ({e})") from e


def as_ndim(fn: str, name: str, x, ndims: tuple[int, ...], expected: str) -> np.ndarray:
    """`x` as an array whose ndim is one of `ndims`; `expected` spells the shapes, e.g. "[time, features]"."""
    x = as_array(fn, name, x)
    if x.ndim not in ndims:
        raise ValueError(f"{where(fn)}: {name} must be {expected}; got shape {x.shape} ({x.ndim}-D)")
    return x


def as_series(fn: str, name: str, x, *, min_steps: int = 1) -> np.ndarray:
    """A `[time]` or `[time, features]` array as `[time, features]` (a view; 1-D is one feature)."""
    x = as_ndim(fn, name, x, (1, 2), "[time] or [time, features]")
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[0] < min_steps:
        raise ValueError(f"{where(fn)}: {name} must have at least {min_steps} time step"
                         f"{'s' if min_steps != 1 else ''}; got shape {x.shape}")
    return x


def check_same_length(fn: str, arrays: dict[str, np.ndarray], what: str = "length (axis 0)") -> int:
    """All arrays have the same `len`; returns it."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        got = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        names = " and ".join(lengths)
        raise ValueError(f"{where(fn)}: {names} must have the same {what}; got {got}")
    return next(iter(lengths.values()))


def check_finite(fn: str, name: str, x: np.ndarray) -> np.ndarray:
    """`x` must be numeric with no NaN or infinity (checked before fitting statistics)."""
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{where(fn)}: {name} must be a real numeric array (float or int); got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.floating):
        nan = np.isnan(x)
        if nan.any():
            first = tuple(int(i) for i in np.argwhere(nan)[0])
            raise ValueError(f"{where(fn)}: {name} must not contain NaN; got {int(nan.sum())} NaN value(s), "
                             f"the first at index {first} — fill or drop them before fitting")
        inf = np.isinf(x)
        if inf.any():
            first = tuple(int(i) for i in np.argwhere(inf)[0])
            raise ValueError(f"{where(fn)}: {name} must be finite; got {int(inf.sum())} infinite value(s), "
                             f"the first at index {first}")
    return x
