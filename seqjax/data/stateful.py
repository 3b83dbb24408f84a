"""Aligned chunks for stateful training: row ``i`` of chunk ``k`` continues row ``i`` of chunk ``k - 1``.

This is the arrangement Keras's ``stateful=True`` requires (and ``shuffle=False`` to keep). In seqjax
the state continues because you pass the carry on::

    sb = stateful_batches(x_TF, batch_size=8, chunk_length=50)
    for k in range(len(sb.xs)):                 # in order: never shuffle stateful chunks
        if sb.reset[k]:                         # chunk k starts new streams
            carry = cell.initial_carry(8)
        carry, ys = sj.scan(cell, params, carry, sb.xs[k])

Layouts (``B = batch_size``, ``C = chunk_length``):

* one long series ``[T, F]`` (or ``[T]``): cut into ``B`` contiguous streams, stream ``i`` being the
  ``i``-th segment of the series, so row ``i`` over all chunks reads stream ``i`` in order.
  ``remainder="drop"`` (default): every stream has ``n * C`` steps, ``n = T // (B * C)``, and the last
  ``T - B * n * C`` steps of the series are dropped. ``remainder="pad"``: no step is dropped; the streams
  are as equal as possible (``T // B`` or ``T // B + 1`` steps, longer ones first, like
  ``numpy.array_split``), ``n = ceil(T / (B * C))``, and each stream is zero-padded at its end.
* ``S`` parallel series ``[S, T, F]`` (e.g. ``S`` tanks or stocks): each series is one stream;
  ``batch_size`` must divide ``S``; the series form ``G = S // B`` groups of ``B`` consecutive series
  (series ``s`` is row ``s % B`` of group ``s // B``), and the chunks of group 0 come first, then group 1's.
  ``reset`` marks the first chunk of each group. Each series' tail that does not fill a chunk is dropped
  (``remainder="drop"``) or zero-padded (``"pad"``).

A 2-D array is always one long series ``[T, F]``; give ``S`` univariate series as ``[S, T, 1]``.
``mask`` is always returned (all True when dropping), so the result type never depends on ``remainder``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from seqjax.data import _checks

REMAINDERS = ("drop", "pad")


class StatefulBatches(NamedTuple):
    """Chunks for stateful training; iterate them in order (``xs[k]``), resetting the carry where ``reset``."""

    xs: np.ndarray  # [num_chunks, B, C, F]
    mask: np.ndarray  # [num_chunks, B, C] bool: True on real steps, False on padding
    reset: np.ndarray  # [num_chunks] bool: True where chunk k starts new streams (pass a fresh carry)


class StatefulPairs(NamedTuple):
    """Stateful next-step chunks: ``ys[k, i, c]`` is the series step after ``xs[k, i, c]``."""

    xs: np.ndarray  # [num_chunks, B, C, F]
    ys: np.ndarray  # [num_chunks, B, C, F_t]
    mask: np.ndarray  # [num_chunks, B, C] bool
    reset: np.ndarray  # [num_chunks] bool


def _as_streams(fn: str, name: str, series) -> np.ndarray:
    x = _checks.as_ndim(fn, name, series, (1, 2, 3),
                        "[time], [time, features] (one long series) or [series, time, features]")
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[-2] < 1 or (x.ndim == 3 and x.shape[0] < 1):
        raise ValueError(f"seqjax.data.{fn}: {name} must have at least one series and one time step; "
                         f"got shape {x.shape}")
    return x


def _long_layout(fn: str, num_steps: int, batch_size: int, chunk_length: int, remainder: str):
    """Flat indices [n, B, C] into a [T, ...] series, the real-step mask [n, B, C] and reset [n]."""
    if batch_size > num_steps:
        raise ValueError(f"seqjax.data.{fn}: batch_size (the number of streams cut from one long series) must "
                         f"be <= its {num_steps} time steps; got {batch_size}")
    if remainder == "drop":
        num_chunks = num_steps // (batch_size * chunk_length)
        if num_chunks == 0:
            raise ValueError(f"seqjax.data.{fn}: one chunk of batch_size * chunk_length = {batch_size} * "
                             f"{chunk_length} = {batch_size * chunk_length} steps does not fit in the "
                             f"series' {num_steps} time steps; use a smaller batch_size or chunk_length, "
                             f"or remainder='pad'")
        lengths = np.full(batch_size, num_chunks * chunk_length)
    else:
        q, r = divmod(num_steps, batch_size)
        lengths = q + (np.arange(batch_size) < r)
        num_chunks = -(-int(lengths[0]) // chunk_length)
    starts = np.cumsum(lengths) - lengths
    pos = np.arange(num_chunks)[:, None, None] * chunk_length + np.arange(chunk_length)  # [n, 1, C]
    mask = pos < lengths[:, None]  # [n, B, C]
    index = np.where(mask, starts[:, None] + pos, 0)
    reset = np.arange(num_chunks) == 0
    return index, mask, reset


def _parallel_layout(fn: str, num_series: int, num_steps: int, batch_size: int, chunk_length: int,
                     remainder: str):
    """Flat indices [n, B, C] into a [S * T, ...] array, the mask and reset, for S parallel series."""
    if batch_size > num_series or num_series % batch_size:
        raise ValueError(f"seqjax.data.{fn}: batch_size must divide the number of parallel series "
                         f"(axis 0 of [series, time, features], here {num_series}) so every batch row is one "
                         f"series; got {batch_size}")
    if remainder == "drop":
        per_group = num_steps // chunk_length
        if per_group == 0:
            raise ValueError(f"seqjax.data.{fn}: chunk_length must be <= the {num_steps} time steps of each "
                             f"series (or use remainder='pad'); got {chunk_length}")
    else:
        per_group = -(-num_steps // chunk_length)
    groups = num_series // batch_size
    pos = np.arange(per_group)[:, None, None] * chunk_length + np.arange(chunk_length)  # [n_g, 1, C]
    series = np.arange(num_series).reshape(groups, 1, batch_size, 1)  # [G, 1, B, 1]
    mask = np.broadcast_to(pos < num_steps, (groups, per_group, batch_size, chunk_length))
    index = np.where(mask, series * num_steps + pos, 0)
    shape = (groups * per_group, batch_size, chunk_length)
    reset = np.arange(groups * per_group) % per_group == 0
    return index.reshape(shape), mask.reshape(shape), reset


def _layout(fn: str, x: np.ndarray, batch_size, chunk_length, remainder):
    batch_size = _checks.check_int(fn, "batch_size", batch_size, minimum=1)
    chunk_length = _checks.check_int(fn, "chunk_length", chunk_length, minimum=1)
    remainder = _checks.check_choice(fn, "remainder", remainder, REMAINDERS)
    if x.ndim == 2:
        return _long_layout(fn, x.shape[0], batch_size, chunk_length, remainder)
    return _parallel_layout(fn, x.shape[0], x.shape[1], batch_size, chunk_length, remainder)


def _gather(x: np.ndarray, index: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """x [T, F] or [S, T, F] gathered at flat time indices -> [n, B, C, F], zeros where mask is False."""
    out = x.reshape(-1, x.shape[-1])[index]
    out[~mask] = 0
    return out


def stateful_batches(series, batch_size, chunk_length, *, remainder="drop") -> StatefulBatches:
    """Arrange a long series ``[T, F]`` (or ``[T]``) or parallel series ``[S, T, F]`` into aligned chunks.

    Returns ``StatefulBatches(xs [n, B, C, F], mask [n, B, C], reset [n])`` (``B = batch_size``,
    ``C = chunk_length``) in which row ``i`` of chunk ``k`` continues row ``i`` of chunk ``k - 1`` unless
    ``reset[k]``. Chunks do not overlap and no step is lost or repeated except the dropped remainder (see the
    module docstring for the layouts). Padded steps are zeros with ``mask`` False. ``xs`` is a new
    C-contiguous array. Undo it with ``unstack_stateful``.

    >>> import numpy as np
    >>> sb = stateful_batches(np.arange(26), batch_size=2, chunk_length=4)   # drop: 2 streams of 12 steps
    >>> sb.xs.shape, sb.mask.shape, sb.reset.tolist()
    ((3, 2, 4, 1), (3, 2, 4), [True, False, False])
    >>> sb.xs[0, :, :, 0].tolist(), sb.xs[1, :, :, 0].tolist()   # row 1 is steps 12..23
    ([[0, 1, 2, 3], [12, 13, 14, 15]], [[4, 5, 6, 7], [16, 17, 18, 19]])
    >>> pad = stateful_batches(np.arange(10), batch_size=2, chunk_length=4, remainder="pad")
    >>> pad.xs[:, 1, :, 0].tolist(), pad.mask[:, 1].tolist()   # stream 1 is steps 5..9, then padding
    ([[5, 6, 7, 8], [9, 0, 0, 0]], [[True, True, True, True], [True, False, False, False]])
    """
    fn = "stateful_batches"
    x = _as_streams(fn, "series", series)
    index, mask, reset = _layout(fn, x, batch_size, chunk_length, remainder)
    return StatefulBatches(_gather(x, index, mask), np.ascontiguousarray(mask), reset)


def stateful_pairs(series, batch_size, chunk_length, *, remainder="drop", targets=None) -> StatefulPairs:
    """Stateful chunks for next-step prediction: inputs ``series[t]``, targets ``targets[t + 1]``.

    The inputs ``series[:-1]`` and the targets ``targets[1:]`` (default ``targets = series``; for ``[S, T, F]``
    along the time axis of every series) are arranged with the same layout as ``stateful_batches``, so
    ``ys[k, i, c]`` is always the step after ``xs[k, i, c]`` — also across chunk boundaries: the target of the
    last step of chunk ``k`` is the first input of chunk ``k + 1`` in the same row. ``targets`` is
    ``[T, F_t]`` or ``[T]`` (``[S, T, F_t]`` for parallel series). Returns
    ``StatefulPairs(xs [n, B, C, F], ys [n, B, C, F_t], mask [n, B, C], reset [n])``.

    >>> import numpy as np
    >>> sp = stateful_pairs(np.arange(17), batch_size=2, chunk_length=4)   # 16 pairs: 2 streams of 8
    >>> sp.xs[:, 0, :, 0].tolist()
    [[0, 1, 2, 3], [4, 5, 6, 7]]
    >>> sp.ys[:, 0, :, 0].tolist()                    # ys[0, 0, -1] == xs[1, 0, 0]
    [[1, 2, 3, 4], [5, 6, 7, 8]]
    """
    fn = "stateful_pairs"
    x = _as_streams(fn, "series", series)
    if targets is None:
        y = x
    else:
        y = _as_streams(fn, "targets", targets)
        if y.shape[:-1] != x.shape[:-1]:
            lead = "[time]" if x.ndim == 2 else "[series, time]"
            raise ValueError(f"seqjax.data.stateful_pairs: targets must match series in {lead} = "
                             f"{x.shape[:-1]} (any number of features); got shape {y.shape}")
    if x.shape[-2] < 2:
        raise ValueError(f"seqjax.data.stateful_pairs: series must have at least 2 time steps to pair each step "
                         f"with the next; got shape {x.shape}")
    x, y = (x[:-1], y[1:]) if x.ndim == 2 else (x[:, :-1], y[:, 1:])
    index, mask, reset = _layout(fn, x, batch_size, chunk_length, remainder)
    return StatefulPairs(_gather(x, index, mask), _gather(y, index, mask), np.ascontiguousarray(mask), reset)


def unstack_stateful(chunks, mask, *, num_series=None) -> np.ndarray:
    """Put per-stream outputs ``[n, B, C, ...]`` back into series order, dropping padded steps.

    ``chunks`` holds one value per step in the layout of ``stateful_batches`` / ``stateful_pairs`` (e.g. the
    model outputs ``ys`` of every chunk stacked, or ``xs`` itself); ``mask`` is that layout's ``[n, B, C]``
    mask. With ``num_series=None`` the chunks came from one long series: returns ``[T_kept, ...]``, the real
    steps of stream 0, then stream 1, ... (the input series, less a dropped remainder). With
    ``num_series=S`` they came from ``S`` parallel series: returns ``[S, T_kept, ...]``.

    >>> import numpy as np
    >>> sb = stateful_batches(np.arange(10), batch_size=3, chunk_length=2, remainder="pad")
    >>> unstack_stateful(sb.xs, sb.mask)[:, 0].tolist()
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    >>> par = stateful_batches(np.arange(2 * 5).reshape(2, 5, 1), batch_size=1, chunk_length=3)
    >>> unstack_stateful(par.xs, par.mask, num_series=2)[..., 0].tolist()   # tails of 2 steps dropped
    [[0, 1, 2], [5, 6, 7]]
    """
    fn = "unstack_stateful"
    chunks = _checks.as_array(fn, "chunks", chunks)
    mask = _checks.as_ndim(fn, "mask", mask, (3,), "[num_chunks, batch, chunk_length] bool")
    if mask.dtype != np.bool_:
        raise TypeError(f"seqjax.data.unstack_stateful: mask must be a bool array [num_chunks, batch, "
                        f"chunk_length]; got dtype {mask.dtype}")
    if chunks.shape[:3] != mask.shape:
        raise ValueError(f"seqjax.data.unstack_stateful: chunks must be [num_chunks, batch, chunk_length, ...] "
                         f"= {mask.shape + ('...',)} like mask; got shape {chunks.shape}")
    num_chunks, batch, chunk_length = mask.shape
    rest = chunks.shape[3:]
    if num_series is None:
        flat = chunks.swapaxes(0, 1).reshape((-1,) + rest)  # stream 0's steps, then stream 1's, ...
        return flat[mask.swapaxes(0, 1).reshape(-1)]
    num_series = _checks.check_int(fn, "num_series", num_series, minimum=1)
    groups, bad = divmod(num_series, batch)
    if bad or groups == 0 or num_chunks % groups:
        raise ValueError(f"seqjax.data.unstack_stateful: num_series must be a multiple of the batch size {batch} "
                         f"whose group count divides the {num_chunks} chunks; got {num_series}")
    per_group = num_chunks // groups
    shape = (groups, per_group, batch, chunk_length)
    x = chunks.reshape(shape + rest).transpose((0, 2, 1, 3) + tuple(range(4, 4 + len(rest))))
    x = x.reshape((num_series, per_group * chunk_length) + rest)
    m = mask.reshape(shape).transpose(0, 2, 1, 3).reshape(num_series, per_group * chunk_length)
    kept = int(m[0].sum())
    if not (m[:, :kept].all() and not m[:, kept:].any()):
        raise ValueError("seqjax.data.unstack_stateful: mask must mark the same number of leading real steps "
                         "in every series (as stateful_batches makes for [series, time, features]); got a "
                         "mask that does not — for one long series leave num_series=None")
    return x[:, :kept]
