"""Closed loop: `rollout` feeds each output back as the next input; `forecast` warms up first.

Both are one `lax.scan` over `cell.step` through the whole stack, compiled once per static `steps`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from seqjax import checks
from seqjax.cell import Cell
from seqjax.scan import scan


def _identity(y):
    return y


def _check_steps(steps, where):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{where}: steps must be an int >= 1 (static: one compile per value); got {steps!r}")


def _check_feedback(cell, params, carry, x0, feedback, where):
    """The fed-back output must be a valid next input: same shape and dtype kind as `x0`."""
    y = jax.eval_shape(lambda: cell.step(params, carry, x0)[1])
    x_next = jax.eval_shape(feedback, y)
    if tuple(x_next.shape) != tuple(x0.shape):
        what = "the model's output" if feedback is _identity else "feedback(output)"
        raise ValueError(
            f"{where}: {what} must fit the input, shape {tuple(x0.shape)}; got {tuple(x_next.shape)} — the "
            f"model outputs {y.shape[-1]} features per step; pass feedback= to map outputs to inputs")
    if jnp.issubdtype(x_next.dtype, jnp.integer) != jnp.issubdtype(x0.dtype, jnp.integer):
        raise TypeError(f"{where}: feedback must return the input's kind of dtype ({x0.dtype}); got {x_next.dtype}")


def rollout(model: Cell, params, carry, x0, steps: int, feedback=None):
    """Closed loop from `x0 [B, F]`: `y_1 = step(x0)`, then `x_{t+1} = feedback(y_t)` (identity by default).

    Returns `(final_carry, ys [B, steps, out])`; the final carry has consumed `x0 .. x_steps`, so
    `rollout(model, params, carry, feedback(ys[:, -1]), more)` continues the same trajectory.
    """
    where = "sj.rollout"
    checks.check_cell(model, where, "model")
    _check_steps(steps, where)
    spec = model.input_spec(params)
    x0 = checks.check_inputs(x0, spec, where, "x0", ("batch",))
    checks.check_carry(model, carry, x0.shape[0], where)
    feedback = _identity if feedback is None else feedback
    if not callable(feedback):
        raise TypeError(f"{where}: feedback must be a callable y_t -> x_(t+1); got {type(feedback).__name__}")
    _check_feedback(model, params, carry, x0, feedback, where)

    def body(state, _):
        carry, x_t = state
        carry, y_t = model.step(params, carry, x_t)
        return (carry, feedback(y_t).astype(x_t.dtype)), y_t

    (carry, _), ys_TB = lax.scan(body, (carry, x0), None, length=steps)
    return carry, jnp.swapaxes(ys_TB, 0, 1)


def forecast(model: Cell, params, carry, context, steps: int, feedback=None):
    """Warm up on `context [B, T, F]`, then predict `steps` outputs in closed loop.

    `future[:, 0]` is the model's output at the last context step (the prediction of the first unknown
    step); each later step feeds the previous prediction back. Returns `(final_carry, future [B, steps, out])`;
    continuing with `rollout(model, params, carry, feedback(future[:, -1]), more)` equals a longer forecast.
    """
    where = "sj.forecast"
    checks.check_cell(model, where, "model")
    _check_steps(steps, where)
    spec = model.input_spec(params)
    context = checks.check_inputs(context, spec, where, "context", ("batch", "time"))
    feedback = _identity if feedback is None else feedback
    _check_feedback(model, params, carry, context[:, -1], feedback, where)
    carry, ys = scan(model, params, carry, context)
    first = ys[:, -1]
    if steps == 1:
        return carry, first[:, None]
    carry, rest = rollout(model, params, carry, feedback(first).astype(context.dtype), steps - 1, feedback)
    return carry, jnp.concatenate([first[:, None], rest], axis=1)
