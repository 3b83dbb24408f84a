"""Sliding windows over one series, cut exactly as Keras's ``timeseries_dataset_from_array`` cuts them."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from seqjax.data import _checks


def window_view(x_TF: np.ndarray, length: int, count: int, *, stride: int = 1, sampling_rate: int = 1,
                start: int = 0) -> np.ndarray:
    """``count`` windows of ``x_TF`` as a read-only view ``[count, length, F]`` (arguments already checked).

    Window ``n`` holds steps ``start + n * stride + j * sampling_rate`` for ``j = 0 .. length - 1``.
    """
    span = (length - 1) * sampling_rate + 1
    sub_TF = x_TF[start:start + (count - 1) * stride + span]
    # sliding_window_view(axis=0) gives [T - span + 1, F, span]; keep every stride-th window and sampled step.
    w_NFL = sliding_window_view(sub_TF, span, axis=0)[::stride, :, ::sampling_rate]
    return w_NFL.transpose(0, 2, 1)


def windows(series, length, *, stride=1, sampling_rate=1, start=0, end=None, copy=False) -> np.ndarray:
    """Every window of ``length`` steps of ``series`` ``[T, F]`` (or ``[T]``) as one array ``[N, length, F]``.

    Window ``n`` starts at step ``i = start + n * stride`` and holds steps
    ``i, i + sampling_rate, ..., i + (length - 1) * sampling_rate``; the windows are all those whose last
    step is before ``end`` (default ``len(series)``), so
    ``N = ceil((end - start - (length - 1) * sampling_rate) / stride)``.

    These are exactly the windows, in order, of Keras's ``timeseries_dataset_from_array(series, None,
    sequence_length=length, sequence_stride=stride, sampling_rate=sampling_rate, start_index=start,
    end_index=end)``. Where Keras yields nothing (the window does not fit) this raises a ValueError. Keras
    also rejects a few arguments with a clear meaning, which this accepts: ``end == len(series)`` (the same
    as ``None``) and a ``stride`` or ``sampling_rate`` of at least the series length. A 1-D series is one
    feature (``F = 1``).

    Returns a read-only strided **view** of ``series``: no step is copied, windows share memory, and writing
    into the result is refused. ``copy=True`` returns a writeable C-contiguous copy instead
    (``N * length * F`` elements).

    >>> import numpy as np
    >>> x_TF = np.arange(10)[:, None] * [1, 10]   # [10, 2]: feature 0 is the time index
    >>> w_NLF = windows(x_TF, 3, stride=2, sampling_rate=2)
    >>> w_NLF.shape
    (3, 3, 2)
    >>> w_NLF[..., 0].tolist()                    # start steps 0, 2, 4; every 2nd step
    [[0, 2, 4], [2, 4, 6], [4, 6, 8]]
    >>> windows(np.arange(10), 4, start=3, end=9)[..., 0].tolist()
    [[3, 4, 5, 6], [4, 5, 6, 7], [5, 6, 7, 8]]
    """
    fn = "windows"
    x_TF = _checks.as_series(fn, "series", series)
    length = _checks.check_int(fn, "length", length, minimum=1)
    stride = _checks.check_int(fn, "stride", stride, minimum=1)
    sampling_rate = _checks.check_int(fn, "sampling_rate", sampling_rate, minimum=1)
    copy = _checks.check_bool(fn, "copy", copy)
    num_steps = x_TF.shape[0]
    start = _checks.check_int(fn, "start", start, minimum=0)
    if start >= num_steps:
        raise ValueError(f"seqjax.data.windows: start must be an int in [0, {num_steps}) for a series of "
                         f"{num_steps} steps; got {start}")
    if end is None:
        end = num_steps
    else:
        end = _checks.check_int(fn, "end", end, minimum=0)
        if not start < end <= num_steps:
            raise ValueError(f"seqjax.data.windows: end must be None or an int in ({start}, {num_steps}] "
                             f"(after start={start}, at most the series length {num_steps}); got {end}")
    span = (length - 1) * sampling_rate + 1
    if span > end - start:
        raise ValueError(f"seqjax.data.windows: a window of length={length} with sampling_rate={sampling_rate} "
                         f"spans {span} steps, longer than the {end - start} steps of series[{start}:{end}] "
                         f"(series shape {tuple(np.shape(series))}); shorten length or sampling_rate")
    count = -(-(end - start - span + 1) // stride)
    w_NLF = window_view(x_TF, length, count, stride=stride, sampling_rate=sampling_rate, start=start)
    return np.array(w_NLF, order="C", copy=True) if copy else w_NLF
