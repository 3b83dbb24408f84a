"""What training minimises: an `Objective`, the one signature every step, epoch and `fit` takes.

An objective is a NamedTuple of two pure functions:

- `loss_fn(params, carry, batch, key) -> (loss, LossAux(carry, metrics))`: the scalar loss of one
  `TrainBatch` starting from `carry`, the carry after it, and a dict of extra scalar metrics. `key` is a
  PRNG key during training (dropout on) and `None` in evaluation (dropout off).
- `initial_carry(batch_size) -> carry`: the fresh carry (`()` for objectives that keep no state).

Stateless steps call `loss_fn` from `initial_carry(B)` for every batch; stateful steps pass the carry
on. Build one from a cell and a loss with `objective`, wrap a carry-free `(params, batch, key)` function
with `stateless_objective`, or write `Objective(loss_fn, initial_carry)` yourself (the autoencoder,
scheduled sampling, a many-to-one head on a stateful stream).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax.numpy as jnp

from seqjax import checks
from seqjax.cell import Cell
from seqjax.scan import scan
from seqjax.train.state import TrainBatch

RESERVED_METRICS = ("loss", "grad_norm", "nonfinite")


class LossAux(NamedTuple):
    """The auxiliary output of `Objective.loss_fn`: the carry after the batch and extra scalar metrics."""

    carry: Any
    metrics: dict


class Objective(NamedTuple):
    """`loss_fn(params, carry, batch, key) -> (loss, LossAux(carry, metrics))`; `initial_carry(B) -> carry`."""

    loss_fn: Callable[..., tuple[Any, LossAux]]
    initial_carry: Callable[[int], Any]
    name: str = "objective"


def _check_loss(loss, where):
    if not callable(loss):
        raise TypeError(f"{where}: loss must be a callable (pred, target, mask) -> scalar such as "
                        f"seqjax.losses.mse; got {type(loss).__name__}")


def _check_metrics(metrics, where):
    metrics = dict(metrics or {})
    for name, fn in metrics.items():
        if not isinstance(name, str) or name in RESERVED_METRICS:
            raise ValueError(f"{where}: metrics names must be strings other than {list(RESERVED_METRICS)}; "
                             f"got {name!r}")
        if not callable(fn):
            raise TypeError(f"{where}: metrics[{name!r}] must be a callable (pred, target, mask) -> scalar; got "
                            f"{type(fn).__name__}")
    return metrics


def objective(model: Cell, loss, *, metrics: Optional[dict] = None, unroll: int = 1) -> Objective:
    """The many-to-many objective of a cell: `loss(pred, batch.targets, batch.mask)` with
    `carry, pred = sj.scan(model, params, carry, batch.inputs, mask=, reset=, key=)`.

    `loss` is any `(pred, target, mask) -> scalar` (`seqjax.losses.mse`, `sparse_categorical_crossentropy`,
    `last_step(mse)` for many-to-one, or your own); `mask` is `None` when the batch has none. A `[B, T]`
    batch mask is also the scan's mask (padded steps leave the carry alone); a `[B]` mask only weights the
    loss. A `[B, T]` `batch.reset` goes to the scan. Dropout is on when the step passes a key (training)
    and off in evaluation. `metrics`: extra `{name: (pred, target, mask) -> scalar}` reported with the
    loss, e.g. `{"mae": seqjax.losses.mae}`.
    """
    where = "seqjax.train.objective"
    checks.check_cell(model, where, "model")
    _check_loss(loss, where)
    metrics = _check_metrics(metrics, where)
    checks.check_unroll(unroll, where)

    def loss_fn(params, carry, batch: TrainBatch, key):
        mask = batch.mask
        scan_mask = mask if mask is not None and jnp.ndim(mask) == 2 else None
        reset = batch.reset if batch.reset is not None and jnp.ndim(batch.reset) == 2 else None
        carry, pred = scan(model, params, carry, batch.inputs, mask=scan_mask, reset=reset, key=key,
                           unroll=unroll)
        value = loss(pred, batch.targets, mask)
        extra = {name: fn(pred, batch.targets, mask) for name, fn in metrics.items()}
        return value, LossAux(carry, extra)

    return Objective(loss_fn=loss_fn, initial_carry=lambda batch_size: model.initial_carry(batch_size),
                     name=model.name)


def stateless_objective(loss_fn: Callable, *, name: str = "stateless") -> Objective:
    """An objective from `loss_fn(params, batch, key) -> (loss, metrics)` that keeps no carry (`()`).

    For models that are not one scan and start fresh on every batch: the LSTM autoencoder (encode
    many-to-one, repeat, decode), many-to-one heads, scheduled sampling. `key` is None in evaluation.
    """
    if not callable(loss_fn):
        raise TypeError(f"seqjax.train.stateless_objective: loss_fn must be a callable (params, batch, key) -> "
                        f"(loss, metrics); got {type(loss_fn).__name__}")

    def wrapped(params, carry, batch, key):
        value, metrics = loss_fn(params, batch, key)
        return value, LossAux(carry, metrics)

    return Objective(loss_fn=wrapped, initial_carry=lambda batch_size: (), name=name)


def check_objective(obj, where: str) -> Objective:
    if isinstance(obj, Cell):
        raise TypeError(f"{where}: objective must be a seqjax.train.Objective; got a Cell — wrap it with its loss: "
                        f"seqjax.train.objective(model, seqjax.losses.mse)")
    if not isinstance(obj, Objective):
        raise TypeError(f"{where}: objective must be a seqjax.train.Objective (seqjax.train.objective(model, loss)); "
                        f"got {type(obj).__name__}")
    return obj


def objective_and_optimizer(model, loss, optimizer, where: str):
    """The two call forms of the step factories: `(model, loss, optimizer)` with a cell and a
    `(pred, target, mask) -> scalar` loss, or `(objective, optimizer)` with any `Objective`."""
    if isinstance(model, Objective):
        if optimizer is None:
            return model, loss
        if loss is not None:
            raise TypeError(f"{where}: with an Objective pass (objective, optimizer); the loss is already in the "
                            f"objective, got a loss too")
        return model, optimizer
    if isinstance(model, Cell):
        if optimizer is None:
            got = "(model, optimizer) — add the loss, e.g. seqjax.losses.mse" if hasattr(loss, "update") \
                else "no optimizer"
            raise TypeError(f"{where}: with a cell pass (model, loss, optimizer); got {got}")
        return objective(model, loss), optimizer
    raise TypeError(f"{where}: model must be a seqjax Cell (with a loss) or a seqjax.train.Objective; "
                    f"got {type(model).__name__}")


def objective_for_eval(model, loss, where: str) -> Objective:
    """`(model, loss)` with a cell, or `(objective,)`, as an Objective."""
    if isinstance(model, Cell):
        return objective(model, loss)
    if loss is not None:
        raise TypeError(f"{where}: with an Objective pass it alone; the loss is already in the objective")
    return check_objective(model, where)


def call_loss(obj: Objective, params, carry, batch, key, where: str):
    """`obj.loss_fn(...)` with its output checked at trace time: a scalar loss, `LossAux`-like aux."""
    out = obj.loss_fn(params, carry, batch, key)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(f"{where}: loss_fn must return (loss, LossAux(carry, metrics)); got {type(out).__name__}")
    value, aux = out
    if jnp.ndim(value) != 0:
        raise ValueError(f"{where}: loss_fn must return a scalar loss; got shape {jnp.shape(value)} — "
                         f"reduce it with a mean")
    if not (isinstance(aux, tuple) and len(aux) == 2):
        raise TypeError(f"{where}: loss_fn's aux must be LossAux(carry, metrics); got {type(aux).__name__}")
    carry, metrics = aux
    if not isinstance(metrics, dict):
        raise TypeError(f"{where}: loss_fn's metrics must be a dict of scalars; got {type(metrics).__name__}")
    for name, v in metrics.items():
        if name in RESERVED_METRICS:
            raise ValueError(f"{where}: loss_fn's metrics must not use the reserved names {list(RESERVED_METRICS)};"
                             f" got {name!r}")
        if jnp.ndim(v) != 0:
            raise ValueError(f"{where}: loss_fn's metric {name!r} must be a scalar; got shape {jnp.shape(v)}")
    return value, LossAux(carry, metrics)
