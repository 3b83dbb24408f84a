"""Fixed-shape minibatches of aligned arrays, so a jitted step compiles once."""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from seqjax.data import _checks
from seqjax.data.stateful import StatefulBatches, StatefulPairs

REMAINDERS = ("drop", "pad")


class Batch(NamedTuple):
    """One minibatch: the rows of every array, and which rows are real (False on padding)."""

    arrays: tuple  # one [batch_size, ...] array per input array, in the order given
    mask: np.ndarray  # [batch_size] bool


def batches(*arrays, batch_size, shuffle=False, rng=None, remainder="drop") -> Iterator[Batch]:
    """Iterate over aligned ``arrays`` (same length ``N`` on axis 0) in batches of exactly ``batch_size`` rows.

    Yields ``Batch(arrays, mask)``: a tuple with one ``[batch_size, ...]`` array per input and a bool
    ``mask [batch_size]``, all True except on padding, so every batch has the same shapes and type. A last
    partial batch is dropped (``remainder="drop"``, the default: ``N // batch_size`` batches) or
    zero-padded (``"pad"``: ``ceil(N / batch_size)`` batches, padded rows have ``mask`` False). Every row
    appears exactly once per call (except dropped ones).

    ``shuffle=True`` draws a permutation from ``rng`` when ``batches`` is called: a ``numpy.random.Generator``
    (reuse the same one every epoch for a different, reproducible order each epoch) or an int seed (the same
    order on every call). ``rng`` is ignored without ``shuffle``. Stateful chunks (``StatefulBatches``) are
    refused: iterate them in order by index, ``xs[k]``.

    >>> import numpy as np
    >>> x, y = np.arange(10).reshape(5, 2), np.arange(5)
    >>> for (xb, yb), mask in batches(x, y, batch_size=2, remainder="pad"):
    ...     print(xb.shape, yb.tolist(), mask.tolist())
    (2, 2) [0, 1] [True, True]
    (2, 2) [2, 3] [True, True]
    (2, 2) [4, 0] [True, False]
    >>> rng = np.random.default_rng(0)
    >>> epoch1 = [b.arrays[0].tolist() for b in batches(y, batch_size=5, shuffle=True, rng=rng)]
    >>> epoch2 = [b.arrays[0].tolist() for b in batches(y, batch_size=5, shuffle=True, rng=rng)]
    >>> sorted(epoch1[0]) == sorted(epoch2[0]) == [0, 1, 2, 3, 4], epoch1 != epoch2
    (True, True)
    """
    fn = "batches"
    if not arrays:
        raise TypeError("seqjax.data.batches: expected at least one array, e.g. batches(x, y, batch_size=32); "
                        "got none")
    for i, a in enumerate(arrays):
        if isinstance(a, (StatefulBatches, StatefulPairs)):
            raise TypeError(f"seqjax.data.batches: array {i} is a {type(a).__name__}; stateful chunks must not be "
                            f"reshuffled or re-batched — iterate them in order: for k in range(len(sb.xs)): "
                            f"... sb.xs[k] (reset the carry where sb.reset[k])")
    arrays = tuple(_checks.as_array(fn, f"array {i}", a) for i, a in enumerate(arrays))
    for i, a in enumerate(arrays):
        if a.ndim == 0:
            raise ValueError(f"seqjax.data.batches: array {i} must have a leading row axis [rows, ...]; got a "
                             f"scalar (shape ())")
    num_rows = _checks.check_same_length(fn, {f"array {i}": a for i, a in enumerate(arrays)},
                                         "number of rows (axis 0)")
    batch_size = _checks.check_int(fn, "batch_size", batch_size, minimum=1)
    remainder = _checks.check_choice(fn, "remainder", remainder, REMAINDERS)
    shuffle = _checks.check_bool(fn, "shuffle", shuffle)
    if num_rows == 0:
        raise ValueError("seqjax.data.batches: arrays must have at least one row; got 0 rows")
    if remainder == "drop" and batch_size > num_rows:
        raise ValueError(f"seqjax.data.batches: batch_size must be <= the {num_rows} rows to make one full "
                         f"batch (or use remainder='pad'); got {batch_size}")
    order = None
    if shuffle:
        if isinstance(rng, np.random.Generator):
            generator = rng
        elif rng is None:
            raise ValueError("seqjax.data.batches: shuffle=True needs rng, a numpy.random.Generator "
                             "(np.random.default_rng(seed)) or an int seed; got None")
        elif isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_)):
            generator = np.random.default_rng(_checks.check_int(fn, "rng", rng, minimum=0))
        else:
            raise TypeError(f"seqjax.data.batches: rng must be a numpy.random.Generator or an int seed >= 0; "
                            f"got {type(rng).__name__}")
        order = generator.permutation(num_rows)  # drawn now: each call is one epoch
    num_batches = num_rows // batch_size if remainder == "drop" else -(-num_rows // batch_size)
    return _iterate(arrays, order, batch_size, num_batches, num_rows)


def _iterate(arrays, order, batch_size, num_batches, num_rows) -> Iterator[Batch]:
    full = np.ones(batch_size, dtype=bool)
    for b in range(num_batches):
        lo, hi = b * batch_size, min((b + 1) * batch_size, num_rows)
        rows = slice(lo, hi) if order is None else order[lo:hi]
        if hi - lo == batch_size:
            yield Batch(tuple(a[rows] for a in arrays), full.copy())
            continue
        parts = []
        for a in arrays:
            padded = np.zeros((batch_size,) + a.shape[1:], dtype=a.dtype)
            padded[:hi - lo] = a[rows]
            parts.append(padded)
        yield Batch(tuple(parts), np.arange(batch_size) < hi - lo)
