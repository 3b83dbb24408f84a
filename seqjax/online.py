"""Online learning: one new observation per stream, one prediction, one gradient step, the carry advanced.

    learner = online.init_learner(model, params, optax.adam(1e-3), n_streams=400)
    step = online.make_online_step(model, seqjax.losses.mse, optax.adam(1e-3))
    for x_SF, y_SO in stream:                      # 400 stocks: today's features, tomorrow's target
        learner, metrics = step(learner, x_SF, y_SO)
        use(metrics.prediction)                    # made before y was seen: an honest one-step forecast

A long-running process never re-reads history: the carry holds it. With `save` / `restore`
(`seqjax.train.Checkpointer`) it survives a restart exactly where it stopped.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from seqjax import checks
from seqjax.cell import Cell
from seqjax.loop import tree_where
from seqjax.train._update import apply_gradients, check_options
from seqjax.train.checkpoint import Checkpoint, Checkpointer, Position
from seqjax.train.objective import LossAux
from seqjax.train.state import TrainState, init_state

__all__ = ["OnlineLearner", "OnlineMetrics", "init_learner", "make_online_step", "restore", "save"]


class OnlineLearner(NamedTuple):
    """Everything a running learner carries: `state` (params, optimizer state, step, key), the model's
    `carry` for the `[S]` streams, and `position`, an int32 scalar: the observations consumed so far."""

    state: TrainState
    carry: Any
    position: jax.Array


class OnlineMetrics(NamedTuple):
    """One step's report: `loss` of `prediction [S, ...]` against the new targets, the prediction made from
    `x_t` before the update, `grad_norm` and `nonfinite` (the update was skipped) as in `seqjax.train`."""

    loss: jax.Array
    prediction: Any
    grad_norm: jax.Array
    nonfinite: jax.Array


def init_learner(model: Cell, params, optimizer, n_streams: int, *, key=None) -> OnlineLearner:
    """A fresh learner: `seqjax.train.init_state(params, optimizer, key=key)`, zero carry for `n_streams`,
    position 0."""
    checks.check_cell(model, "seqjax.online.init_learner", "model")
    state = init_state(params, optimizer, key=key)
    return OnlineLearner(state, model.initial_carry(n_streams), jnp.zeros((), jnp.int32))


def make_online_step(model: Cell, loss, optimizer, *, clip_norm=None, donate: bool = True):
    """A compiled `step(learner, x_t [S, F], y_t [S, ...], mask=None) -> (learner, OnlineMetrics)`.

    Predict, then update: `carry', pred = model.step(params, carry, x_t)` with the current params; the loss
    `loss(pred, y_t, mask)` (e.g. `seqjax.losses.mse`) is reported and differentiated with respect to the
    params (gradients stop at the incoming carry: truncated backpropagation of one step), one optax update
    is applied (skipped, params unchanged, when the loss or gradient is not finite), and `carry'` (from the
    params that made the prediction) is the next carry. `mask [S]` bool marks the streams that have an
    observation: the others keep their carry and do not count in the loss. `position` advances by one.
    The learner is donated (use the returned one) unless `donate=False`. Shapes are checked when traced.
    """
    where = "seqjax.online.make_online_step"
    checks.check_cell(model, where, "model")
    if not callable(loss):
        raise TypeError(f"{where}: loss must be a callable (pred, target, mask) -> scalar such as "
                        f"seqjax.losses.mse; got {type(loss).__name__}")
    check_options(optimizer, clip_norm, "skip", where)
    where = "seqjax.online step"

    def step(learner: OnlineLearner, x_t, y_t, mask=None):
        if not isinstance(learner, OnlineLearner):
            raise TypeError(f"{where}: learner must be a seqjax.online.OnlineLearner (online.init_learner(...)); "
                            f"got {type(learner).__name__}")
        state = learner.state
        x_t = checks.check_inputs(x_t, model.input_spec(state.params), where, "x_t", ("streams",))
        streams = x_t.shape[0]
        checks.check_carry(model, learner.carry, streams, where, "learner.carry")
        mask = checks.as_array(mask, where, "mask") if mask is not None else None
        if mask is not None and (mask.dtype != jnp.bool_ or tuple(mask.shape) != (streams,)):
            raise ValueError(f"{where}: mask must be [streams] = ({streams},) bool; got {tuple(mask.shape)} "
                             f"{mask.dtype}")
        carry = lax.stop_gradient(learner.carry)

        def fn(params):
            new_carry, pred = model.step(params, carry, x_t)
            return loss(pred, y_t, mask), (new_carry, pred)

        (value, (new_carry, pred)), grads = jax.value_and_grad(fn, has_aux=True)(state.params)
        state, metrics = apply_gradients(state, value, LossAux(new_carry, {}), grads, optimizer, clip_norm,
                                         value_fn=lambda p: fn(p)[0])
        if mask is not None:
            new_carry = tree_where(mask, new_carry, carry)
        return (OnlineLearner(state, new_carry, learner.position + 1),
                OnlineMetrics(value, pred, metrics["grad_norm"], metrics["nonfinite"]))

    return jax.jit(step, donate_argnums=(0,) if donate else ())


def save(checkpointer: Checkpointer, learner: OnlineLearner) -> int:
    """Save the learner (state, carry, position) as a `seqjax.train.Checkpoint` at its step; returns the step."""
    if not isinstance(learner, OnlineLearner):
        raise TypeError(f"seqjax.online.save: learner must be an OnlineLearner; got {type(learner).__name__}")
    return checkpointer.save(Checkpoint(learner.state, learner.carry, Position(0, int(learner.position))))


def restore(checkpointer: Checkpointer, like: OnlineLearner, *, step: Optional[int] = None) -> OnlineLearner:
    """The learner saved at `step` (default: the latest), read into the structure of `like` (e.g. a fresh
    `init_learner` of the same model, optimizer and number of streams)."""
    if not isinstance(like, OnlineLearner):
        raise TypeError(f"seqjax.online.restore: like must be an OnlineLearner; got {type(like).__name__}")
    ckpt = checkpointer.restore(Checkpoint(like.state, like.carry), step=step)
    return OnlineLearner(ckpt.state, ckpt.carry, jnp.asarray(ckpt.position.index, jnp.int32))
