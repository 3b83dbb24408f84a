"""Per-feature scalers fitted on the training part only; NamedTuples of arrays (so JAX pytrees, checkpointable).

``transform`` and ``inverse`` use arithmetic operators only, so they work on NumPy arrays and, inside or
outside ``jax.jit``, on JAX arrays, without this module importing JAX.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from seqjax.data import _checks


def _fit_input(fn: str, train) -> tuple[np.ndarray, tuple[int, ...], np.dtype]:
    """The training data as float64, the axes to reduce, and the dtype the statistics are stored in."""
    x = _checks.as_array(fn, "train", train)
    if x.ndim == 0 or x.size == 0:
        raise ValueError(f"seqjax.data.{fn}: train must be a non-empty [time, features] (or [time], or "
                         f"[..., features]) array; got shape {x.shape}")
    _checks.check_finite(fn, "train", x)
    dtype = np.result_type(x.dtype, np.float32)
    axes = tuple(range(x.ndim - 1)) if x.ndim > 1 else (0,)
    return x.astype(np.float64, copy=False), axes, dtype


def _check_features(where: str, x, stat: np.ndarray) -> None:
    shape = np.shape(x)
    if stat.ndim and (len(shape) == 0 or shape[-1] != stat.shape[-1]):
        raise ValueError(f"seqjax.data.{where}: x must be [..., {stat.shape[-1]}] (the features the scaler was "
                         f"fitted on); got shape {tuple(shape)}")


class StandardScaler(NamedTuple):
    """``(x - mean) / scale`` per feature; ``scale`` is the std (ddof 0), 1 for a constant feature."""

    mean: np.ndarray  # [F] (shape () when fitted on a 1-D series)
    scale: np.ndarray  # [F]

    def transform(self, x):
        """Standardise ``x`` ``[..., F]``."""
        _check_features("StandardScaler.transform", x, self.mean)
        return (x - self.mean) / self.scale

    def inverse(self, x):
        """Undo ``transform``: ``x * scale + mean`` (e.g. on model outputs in scaled units)."""
        _check_features("StandardScaler.inverse", x, self.mean)
        return x * self.scale + self.mean


class MinMaxScaler(NamedTuple):
    """Maps each feature's training range ``[data_min, data_min + data_range]`` onto ``feature_range``."""

    data_min: np.ndarray  # [F]
    data_range: np.ndarray  # [F]: max - min, 1 for a constant feature
    feature_range: np.ndarray  # [2]: (low, high) of the output

    def transform(self, x):
        """Scale ``x`` ``[..., F]`` so the training range maps onto ``feature_range``."""
        _check_features("MinMaxScaler.transform", x, self.data_min)
        low, high = self.feature_range[0], self.feature_range[1]
        return (x - self.data_min) / self.data_range * (high - low) + low

    def inverse(self, x):
        """Undo ``transform``."""
        _check_features("MinMaxScaler.inverse", x, self.data_min)
        low, high = self.feature_range[0], self.feature_range[1]
        return (x - low) / (high - low) * self.data_range + self.data_min


def fit_standard(train) -> StandardScaler:
    """Per-feature mean and std of ``train`` ``[T, F]`` (any ``[..., F]``; ``[T]`` gives scalars).

    Fit on the training part only (see ``chronological_split``). A constant feature (max == min) gets
    ``scale = 1`` (and ``mean`` = its value), so it transforms to exactly 0 and back without dividing by
    zero. NaN or infinity in ``train`` raises ValueError. Statistics are computed in float64 and stored in
    ``numpy.result_type(train.dtype, float32)`` (float32 data keeps float32 statistics).

    >>> import numpy as np
    >>> train_TF = np.array([[1.0, 5.0], [3.0, 5.0]])
    >>> scaler = fit_standard(train_TF)
    >>> scaler.mean.tolist(), scaler.scale.tolist()
    ([2.0, 5.0], [1.0, 1.0])
    >>> scaler.transform(train_TF).tolist()
    [[-1.0, 0.0], [1.0, 0.0]]
    >>> scaler.inverse(scaler.transform(train_TF)).tolist()
    [[1.0, 5.0], [3.0, 5.0]]
    """
    fn = "fit_standard"
    x, axes, dtype = _fit_input(fn, train)
    lo, hi = x.min(axis=axes), x.max(axis=axes)
    constant = lo == hi
    mean = np.where(constant, lo, x.mean(axis=axes))
    std = np.where(constant, 1.0, x.std(axis=axes))
    return StandardScaler(np.asarray(mean, dtype), np.asarray(std, dtype))


def fit_minmax(train, *, feature_range=(0.0, 1.0)) -> MinMaxScaler:
    """Per-feature min and range of ``train`` ``[T, F]`` (any ``[..., F]``), mapped onto ``feature_range``.

    Fit on the training part only; later data may fall outside ``feature_range``. A constant feature gets
    ``data_range = 1``, so it maps to ``feature_range[0]`` without dividing by zero. NaN or infinity in
    ``train`` raises ValueError; ``feature_range`` must be two finite numbers, low < high.

    >>> import numpy as np
    >>> scaler = fit_minmax(np.array([[0.0, 2.0], [10.0, 2.0]]), feature_range=(-1.0, 1.0))
    >>> scaler.transform(np.array([[5.0, 2.0], [20.0, 2.0]])).tolist()
    [[0.0, -1.0], [3.0, -1.0]]
    """
    fn = "fit_minmax"
    x, axes, dtype = _fit_input(fn, train)
    try:
        low, high = (float(v) for v in feature_range)
    except (TypeError, ValueError) as e:
        raise TypeError(f"seqjax.data.{fn}: feature_range must be a pair of numbers (low, high); "
                        f"got {feature_range!r}") from e
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"seqjax.data.{fn}: feature_range must be (low, high) with finite low < high; "
                         f"got {feature_range!r}")
    lo, hi = x.min(axis=axes), x.max(axis=axes)
    data_range = np.where(hi == lo, 1.0, hi - lo)
    return MinMaxScaler(np.asarray(lo, dtype), np.asarray(data_range, dtype), np.asarray([low, high], dtype))
