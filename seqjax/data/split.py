"""Chronological train / validation / test split with a gap, so no part sees another part's steps."""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from seqjax.data import _checks


class Split(NamedTuple):
    """Three consecutive parts of a series (views) and their ``[start, stop)`` step ranges."""

    train: np.ndarray  # series[bounds[0, 0] : bounds[0, 1]]
    val: np.ndarray  # series[bounds[1, 0] : bounds[1, 1]]
    test: np.ndarray  # series[bounds[2, 0] : bounds[2, 1]]; empty when test=0
    bounds: np.ndarray  # [3, 2] int: start and stop step of train, val and test


def leakage_gap(length, *, horizon=1, offset=0) -> int:
    """The smallest ``gap`` for ``chronological_split`` when samples are cut across part boundaries.

    A sample of ``windows_and_next(series, length, horizon=horizon, offset=offset)`` spans
    ``length + offset + horizon`` steps. Cutting samples from each part separately never lets one straddle a
    boundary, whatever the gap. But if samples are cut from the whole series and assigned to a part by
    their first step (as Keras's ``start_index`` / ``end_index`` do), the last training sample reaches
    ``length + offset + horizon - 1`` steps past the training part; a gap at least that long keeps its
    targets out of the validation part: ``gap >= length - 1 + offset + horizon``.

    >>> leakage_gap(24, horizon=6)
    29
    """
    fn = "leakage_gap"
    length = _checks.check_int(fn, "length", length, minimum=1)
    horizon = _checks.check_int(fn, "horizon", horizon, minimum=1)
    offset = _checks.check_int(fn, "offset", offset, minimum=0)
    return length - 1 + offset + horizon


def _count(fn: str, name: str, value, num_steps: int, minimum: int) -> int:
    """A part size given as an int (steps) or a float fraction in (0, 1) of the series (rounded down)."""
    if isinstance(value, numbers.Real) and not isinstance(value, (numbers.Integral, bool, np.bool_)):
        if not 0.0 < float(value) < 1.0:
            raise ValueError(f"seqjax.data.{fn}: {name} must be an int number of steps or a float fraction in "
                             f"(0, 1); got {value!r}")
        count = int(np.floor(float(value) * num_steps))
        if count < minimum:
            raise ValueError(f"seqjax.data.{fn}: {name}={value!r} of {num_steps} steps gives {count} steps; "
                             f"need at least {minimum}")
        return count
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"seqjax.data.{fn}: {name} must be an int number of steps or a float fraction in (0, 1); "
                        f"got {value!r} ({type(value).__name__})")
    return _checks.check_int(fn, name, value, minimum=minimum)


def chronological_split(series, *, train, val, test=None, gap=0) -> Split:
    """Split ``series`` ``[T, F]`` (or ``[T]``) in time order into train, ``gap``, val, ``gap``, test.

    ``train``, ``val`` and ``test`` are each an int (a number of steps) or a float fraction in ``(0, 1)``
    of ``T`` (rounded down); ``test=None`` takes every step after the second gap (at least one), ``test=0``
    makes no test part. ``gap`` steps are left out between consecutive parts. Windowing each part on its
    own, no window straddles a boundary; if you instead cut samples across the whole series, use
    ``gap >= leakage_gap(length, horizon=...)`` (``length - 1 + horizon``). Fit scalers on ``train`` only.
    Returns ``Split(train, val, test, bounds)``: views of ``series`` and their ``[start, stop)`` ranges.

    >>> import numpy as np
    >>> parts = chronological_split(np.arange(20), train=0.5, val=4, gap=2)
    >>> parts.train.tolist(), parts.val.tolist(), parts.test.tolist()
    ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [12, 13, 14, 15], [18, 19])
    >>> parts.bounds.tolist()
    [[0, 10], [12, 16], [18, 20]]
    """
    fn = "chronological_split"
    x = _checks.as_ndim(fn, "series", series, (1, 2), "[time] or [time, features]")
    num_steps = x.shape[0]
    gap = _checks.check_int(fn, "gap", gap, minimum=0)
    n_train = _count(fn, "train", train, num_steps, 1)
    n_val = _count(fn, "val", val, num_steps, 1)
    val_start = n_train + gap
    val_stop = val_start + n_val
    test_start = val_stop + gap
    if test is None:
        n_test = num_steps - test_start
        if n_test < 1:
            raise ValueError(f"seqjax.data.{fn}: no steps left for test: train {n_train} + gap {gap} + val {n_val} "
                             f"+ gap {gap} = {test_start} steps of the series' {num_steps}; pass test=0 for a "
                             f"train/val split, or shrink train, val or gap")
    else:
        n_test = _count(fn, "test", test, num_steps, 0)
        if n_test == 0:
            test_start = min(test_start, num_steps)
    needed = test_start + n_test if n_test else val_stop
    if needed > num_steps:
        raise ValueError(f"seqjax.data.{fn}: the parts need {needed} steps (train {n_train} + gap {gap} + val "
                         f"{n_val}{f' + gap {gap} + test {n_test}' if n_test else ''}) but series has "
                         f"{num_steps} (shape {x.shape})")
    bounds = np.array([[0, n_train], [val_start, val_stop], [test_start, test_start + n_test]])
    return Split(x[:n_train], x[val_start:val_stop], x[test_start:test_start + n_test], bounds)
