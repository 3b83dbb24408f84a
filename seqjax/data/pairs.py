"""Supervised (inputs, targets) pairs from a series, with the target alignment spelled out."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from seqjax.data import _checks
from seqjax.data.windows import window_view


class Pairs(NamedTuple):
    """Model inputs and the targets aligned with them; unpacks as ``x, y = pairs``."""

    inputs: np.ndarray
    targets: np.ndarray


def next_step_pairs(seq) -> Pairs:
    """Many-to-many next-step pairs: ``inputs = seq[:, :-1]`` and ``targets = seq[:, 1:]`` along time.

    ``seq`` is ``[B, T, F]`` (time is axis 1), ``[T, F]`` or ``[T]`` (time is axis 0); both results have
    ``T - 1`` steps and the rank of ``seq``, and ``targets[:, t] == seq[:, t + 1]`` is the step after
    ``inputs[:, t]``. Both are views of ``seq``.

    >>> import numpy as np
    >>> seq_BTF = np.arange(2 * 5 * 3).reshape(2, 5, 3)
    >>> x_BTF, y_BTF = next_step_pairs(seq_BTF)
    >>> x_BTF.shape, y_BTF.shape
    ((2, 4, 3), (2, 4, 3))
    >>> x_BTF[1, :, 0].tolist(), y_BTF[1, :, 0].tolist()
    ([15, 18, 21, 24], [18, 21, 24, 27])
    """
    fn = "next_step_pairs"
    seq = _checks.as_ndim(fn, "seq", seq, (1, 2, 3), "[batch, time, features], [time, features] or [time]")
    time_axis = 1 if seq.ndim == 3 else 0
    if seq.shape[time_axis] < 2:
        raise ValueError(f"seqjax.data.next_step_pairs: seq must have at least 2 time steps (axis {time_axis}) "
                         f"to pair each step with the next; got shape {seq.shape}")
    if seq.ndim == 3:
        return Pairs(seq[:, :-1], seq[:, 1:])
    return Pairs(seq[:-1], seq[1:])


def windows_and_next(series, length, *, horizon=1, offset=0, stride=1, targets=None) -> Pairs:
    """Windows of ``length`` steps and the ``horizon`` values that follow each (direct multi-step targets).

    Sample ``n`` has inputs ``series[i : i + length]`` with ``i = n * stride``, and targets
    ``targets[j : j + horizon]`` with the **first target index** ``j = i + length + offset``: ``offset = 0``
    predicts the step right after the window's last step ``i + length - 1``; ``offset`` leaves that many steps
    out between them. ``N = (T - length - offset - horizon) // stride + 1``.
    (Keras's ``timeseries_dataset_from_array`` instead pairs window ``i`` with ``targets[i]``, the window's
    start, so you must shift targets yourself there.)

    ``series`` is ``[T, F]`` or ``[T]``; ``targets`` (default: ``series`` itself) is ``[T, F_t]`` or ``[T]``
    with the same ``T`` — pass ``series[:, [0]]`` to predict only column 0. Returns
    ``Pairs(inputs [N, length, F], targets [N, horizon, F_t])`` (1-D arrays count as one feature; the
    horizon axis is kept for ``horizon = 1``: use ``targets[:, 0]``), both read-only views.

    >>> import numpy as np
    >>> t = np.arange(10)
    >>> x_NLF, y_NHF = windows_and_next(t, 3, horizon=2, offset=1, stride=2)
    >>> x_NLF.shape, y_NHF.shape
    ((3, 3, 1), (3, 2, 1))
    >>> x_NLF[..., 0].tolist(), y_NHF[..., 0].tolist()
    ([[0, 1, 2], [2, 3, 4], [4, 5, 6]], [[4, 5], [6, 7], [8, 9]])
    """
    fn = "windows_and_next"
    x_TF = _checks.as_series(fn, "series", series)
    length = _checks.check_int(fn, "length", length, minimum=1)
    horizon = _checks.check_int(fn, "horizon", horizon, minimum=1)
    offset = _checks.check_int(fn, "offset", offset, minimum=0)
    stride = _checks.check_int(fn, "stride", stride, minimum=1)
    if targets is None:
        y_TF = x_TF
    else:
        y_TF = _checks.as_series(fn, "targets", targets)
        _checks.check_same_length(fn, {"series": x_TF, "targets": y_TF}, "number of time steps")
    num_steps = x_TF.shape[0]
    span = length + offset + horizon
    if span > num_steps:
        raise ValueError(f"seqjax.data.windows_and_next: one sample spans length + offset + horizon = "
                         f"{length} + {offset} + {horizon} = {span} steps, more than the {num_steps} time steps of "
                         f"series; shorten length, offset or horizon")
    count = (num_steps - span) // stride + 1
    inputs = window_view(x_TF, length, count, stride=stride)
    outputs = window_view(y_TF, horizon, count, stride=stride, start=length + offset)
    return Pairs(inputs, outputs)
