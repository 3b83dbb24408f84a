"""Losses and forecast metrics: pure `jax.numpy` functions of `(pred, target, ...)` returning a scalar.

Every function takes the prediction first and the target second. The losses

- ``mse``, ``mae``: mean squared / absolute error, ``pred`` and ``target`` of the same shape;
- ``sparse_categorical_crossentropy``: ``logits [..., C]`` against integer class ids ``[...]``;
- ``binary_crossentropy``: ``logits`` against targets in [0, 1] of the same shape

take an optional bool ``mask`` so padded steps do not count. The mask's shape must be a leading part of
the per-element shape (``[B]``, ``[B, T]`` or the full shape): for ``pred [B, T, F]`` a mask ``[B, T]``
covers all ``F`` features of a step and ``[B]`` a whole sample. The result is the **masked mean**:
``sum(err where mask) / (number of True mask entries * elements each covers)``. Masked entries are
replaced by zeros before the error is computed, so NaN padding and out-of-range padding ids neither
reach the result nor its gradient. An all-False mask gives 0, not NaN.

The forecast metrics ``rmse``, ``smape`` and ``mase`` (MAE is ``mae``) use the same conventions; their
definitions are in their docstrings. ``last_step`` turns a loss on per-step outputs into a many-to-one
loss. All functions work under ``jax.jit``; shape errors are raised at trace time.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

Loss = Callable[..., jax.Array]


def _as_array(x, where: str, argument: str) -> jax.Array:
    try:
        return jnp.asarray(x)
    except TypeError as e:
        raise TypeError(f"{where}: {argument} must be an array; got {type(x).__name__}") from e


def _check_float(x, where: str, argument: str) -> jax.Array:
    x = _as_array(x, where, argument)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{where}: {argument} must be floating (float32, bfloat16, float64); got dtype {x.dtype}")
    return x


def _check_same_shape(pred, target, where: str, pred_name: str = "pred") -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{where}: target must have the shape of {pred_name} {tuple(pred.shape)}; got "
                         f"{tuple(target.shape)} — no broadcasting, reshape one of them")


def _check_mask(mask, shape: tuple, where: str):
    """`mask` as a bool array whose shape is a leading part of `shape`; None stays None."""
    if mask is None:
        return None
    mask = _as_array(mask, where, "mask")
    if mask.dtype != jnp.bool_:
        raise TypeError(f"{where}: mask must be bool (True = counts); got dtype {mask.dtype}")
    if mask.ndim == 0 or tuple(mask.shape) != tuple(shape[:mask.ndim]):
        options = " or ".join(str(tuple(shape[:k])) for k in range(1, len(shape) + 1))
        raise ValueError(f"{where}: mask must have a leading part of the element shape {tuple(shape)} "
                         f"({options}); got {tuple(mask.shape)}")
    return mask


def _expand(mask, ndim: int):
    return jnp.reshape(mask, mask.shape + (1,) * (ndim - mask.ndim))


def _zero_masked(x, mask):
    """`x` with zeros where `mask` (broadcast over trailing axes) is False."""
    if mask is None:
        return x
    return jnp.where(_expand(mask, x.ndim), x, jnp.zeros((), x.dtype))


def masked_mean(err, mask=None) -> jax.Array:
    """Mean of `err` over the entries where `mask` is True (all without a mask); 0 when none is.

    `mask` must be bool with a shape that is a leading part of `err.shape`; it covers the trailing axes.
    """
    where = "seqjax.losses.masked_mean"
    err = _as_array(err, where, "err")
    mask = _check_mask(mask, err.shape, where)
    if mask is None:
        return jnp.mean(err)
    covered = math.prod(err.shape[mask.ndim:])
    total = jnp.sum(_zero_masked(err, mask))
    count = jnp.sum(mask, dtype=jnp.int32) * covered
    return total / jnp.maximum(count, 1).astype(total.dtype)


def _elementwise(pred, target, mask, where: str):
    pred = _check_float(pred, where, "pred")
    target = _check_float(target, where, "target")
    _check_same_shape(pred, target, where)
    mask = _check_mask(mask, pred.shape, where)
    return _zero_masked(pred, mask), _zero_masked(target, mask), mask


def mse(pred, target, mask=None) -> jax.Array:
    """Mean squared error `mean((pred - target) ** 2)` over unmasked entries; `pred`, `target` same shape."""
    pred, target, mask = _elementwise(pred, target, mask, "seqjax.losses.mse")
    return masked_mean(jnp.square(pred - target), mask)


def mae(pred, target, mask=None) -> jax.Array:
    """Mean absolute error `mean(|target - pred|)` over unmasked entries (also the forecast metric MAE)."""
    pred, target, mask = _elementwise(pred, target, mask, "seqjax.losses.mae")
    return masked_mean(jnp.abs(pred - target), mask)


def rmse(pred, target, mask=None) -> jax.Array:
    """Root mean squared error `sqrt(mean((target - pred) ** 2))` over unmasked entries."""
    pred, target, mask = _elementwise(pred, target, mask, "seqjax.losses.rmse")
    return jnp.sqrt(masked_mean(jnp.square(pred - target), mask))


def binary_crossentropy(logits, target, mask=None) -> jax.Array:
    """Binary cross-entropy from logits: `mean(-z log σ(x) - (1 - z) log(1 - σ(x)))`, computed stably as
    `max(x, 0) - x z + log(1 + exp(-|x|))`; `target` z in [0, 1] with the shape of `logits` x."""
    logits, target, mask = _elementwise(logits, target, mask, "seqjax.losses.binary_crossentropy")
    err = jnp.maximum(logits, 0) - logits * target + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    return masked_mean(err, mask)


def sparse_categorical_crossentropy(logits, labels, mask=None) -> jax.Array:
    """Cross-entropy from logits with integer targets: `mean(logsumexp(logits) - logits[label])`.

    `logits [..., C]` (e.g. `[B, T, vocab]`), `labels [...]` int class ids in `[0, C)` (e.g. `[B, T]`),
    `mask` a leading part of `labels.shape`. An unmasked label outside `[0, C)` gives NaN (never a
    silently clamped class); masked labels may hold any value (padding ids such as -1).
    """
    where = "seqjax.losses.sparse_categorical_crossentropy"
    logits = _check_float(logits, where, "logits")
    labels = _as_array(labels, where, "labels")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{where}: labels must be integer class ids; got dtype {labels.dtype} — for one-hot or "
                        f"probability targets use a dense cross-entropy")
    if logits.ndim < 1 or tuple(logits.shape[:-1]) != tuple(labels.shape):
        raise ValueError(f"{where}: logits must be [*labels.shape, classes] = [{', '.join(map(str, labels.shape))}"
                         f"{', ' if labels.ndim else ''}C]; got logits {tuple(logits.shape)} and labels "
                         f"{tuple(labels.shape)}")
    mask = _check_mask(mask, labels.shape, where)
    if mask is not None:
        labels = jnp.where(_expand(mask, labels.ndim), labels, 0)
        logits = _zero_masked(logits, mask)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_p, labels[..., None], axis=-1, mode="fill", fill_value=jnp.nan)[..., 0]
    return masked_mean(-picked, mask)


def smape(pred, target, mask=None) -> jax.Array:
    """Symmetric mean absolute percentage error, in percent (0 to 200), as in the M4 competition:

    `sMAPE = mean(200 |target - pred| / (|target| + |pred|))` over unmasked entries, where a term with
    `|target| + |pred| = 0` (both zero: a perfect forecast) counts as 0.
    """
    pred, target, mask = _elementwise(pred, target, mask, "seqjax.losses.smape")
    denom = jnp.abs(target) + jnp.abs(pred)
    safe = jnp.where(denom > 0, denom, jnp.ones((), denom.dtype))
    ratio = jnp.where(denom > 0, 200.0 * jnp.abs(target - pred) / safe, jnp.zeros((), denom.dtype))
    return masked_mean(ratio, mask)


def _time_axis(ndim: int) -> int:
    return 1 if ndim == 3 else 0


def mase(pred, target, insample, *, m: int = 1) -> jax.Array:
    """Mean absolute scaled error (Hyndman & Koehler 2006, per series as in the M4 competition).

    For each series s (each batch row and feature), with in-sample history `y_1 .. y_n` and forecast
    errors `e_h = target_h - pred_h` over the horizon `h = 1 .. H`:

        scale_s = mean_{t = m+1 .. n} |y_t - y_{t-m}|      (in-sample error of the seasonal-naive forecast)
        MASE_s  = mean_h |e_h| / scale_s

    and the result is the mean of `MASE_s` over series. `m` is the seasonal period (1: the naive,
    persistence forecast). Below 1 the forecast beats the in-sample seasonal-naive forecast. A constant
    history (scale 0) gives inf (or NaN for a perfect forecast), as the definition does.

    Shapes: `pred`, `target` `[B, H, F]`, `[H, F]` or `[H]` (time is axis 1 for 3-D, else axis 0);
    `insample` the history of the same series, `[B, n, F]`, `[n, F]` or `[n]`, same rank and the same
    non-time sizes, with `n > m`.
    """
    where = "seqjax.losses.mase"
    pred = _check_float(pred, where, "pred")
    target = _check_float(target, where, "target")
    insample = _check_float(insample, where, "insample")
    _check_same_shape(pred, target, where)
    if pred.ndim not in (1, 2, 3):
        raise ValueError(f"{where}: pred must be [batch, horizon, features], [horizon, features] or [horizon]; "
                         f"got shape {tuple(pred.shape)}")
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"{where}: m (the seasonal period) must be an int >= 1; got {m!r}")
    axis = _time_axis(pred.ndim)
    other = lambda s: s[:axis] + s[axis + 1:]  # noqa: E731
    if insample.ndim != pred.ndim or other(tuple(insample.shape)) != other(tuple(pred.shape)):
        want = list(pred.shape)
        want[axis] = "n"
        raise ValueError(f"{where}: insample must be [{', '.join(map(str, want))}] (the history of the same "
                         f"series, time on axis {axis}); got {tuple(insample.shape)}")
    n = insample.shape[axis]
    if n <= m:
        raise ValueError(f"{where}: insample must have more than m={m} steps along axis {axis} to form the "
                         f"seasonal-naive error; got shape {tuple(insample.shape)}")
    lead = jax.lax.slice_in_dim(insample, m, n, axis=axis)
    lag = jax.lax.slice_in_dim(insample, 0, n - m, axis=axis)
    scale = jnp.mean(jnp.abs(lead - lag), axis=axis)
    per_series = jnp.mean(jnp.abs(target - pred), axis=axis) / scale
    return jnp.mean(per_series)


def last_step(loss: Loss) -> Loss:
    """A many-to-one loss from a per-element one: `loss(pred[:, -1], target, row_mask)`.

    For per-step outputs `pred [B, T, ...]` and one target per sample `target [B, ...]` (the shifting
    schemes of `seqjax.data`). A step mask `[B, T]` becomes the row mask `[B]` "sample has a valid step";
    with `sj.scan`'s default `masked_output="previous"`, `pred[:, -1]` is each sample's last valid output.
    """
    if not callable(loss):
        raise TypeError(f"seqjax.losses.last_step: loss must be a callable (pred, target, mask) -> scalar; got "
                        f"{type(loss).__name__}")

    def last_step_loss(pred, target, mask=None):
        pred = _as_array(pred, "seqjax.losses.last_step", "pred")
        if pred.ndim < 2:
            raise ValueError(f"seqjax.losses.last_step: pred must be per-step outputs [batch, time, ...]; got "
                             f"shape {tuple(pred.shape)}")
        if mask is not None:
            mask = _as_array(mask, "seqjax.losses.last_step", "mask")
            mask = jnp.any(mask, axis=1) if mask.ndim == 2 else mask
        return loss(pred[:, -1], target, mask)

    return last_step_loss
