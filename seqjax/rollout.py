"""Closed loop: `rollout` feeds each output back as the next input; `forecast` warms up first.

The closed loop is one `lax.scan` over `cell.step` through the whole stack, compiled once per static
`steps`; both work under `jax.vmap` (ensembles of params, batches of initial carries). A `chain(lstm,
dense)` or `chain(gru, dense)` fed back unchanged runs the same steps in one native CPU kernel call instead
(`seqjax.fast.native.layer_closed_loop`), and so does a stack of LSTM and GRU layers with a dense head
(`stack_closed_loop`, below a large layer step); same numbers to float32 tolerance; derivatives, forward
and reverse, are those of the loop over `step`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from seqjax import checks
from seqjax import feedback as fbk
from seqjax.cell import Cell
from seqjax.scan import scan


def _check_steps(steps, where):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{where}: steps must be an int >= 1 (static: one compile per value); got {steps!r}")


def _prepare(model, params, carry, x_like, steps, feedback, key, exogenous, unroll, where):
    """Checks shared by `rollout` and `forecast`; returns the `Feedback`, key and exogenous array."""
    _check_steps(steps, where)
    checks.check_unroll(unroll, where)
    checks.check_carry(model, carry, x_like.shape[0], where)
    fb = fbk.as_feedback(feedback, where)
    key = fbk.check_key(fb, key, where)
    exogenous = fbk.check_exogenous(exogenous, x_like.shape[0], steps, where)
    y = jax.eval_shape(lambda p, c, x: model.step(p, c, x)[1], params, carry, x_like)
    e_t = None if exogenous is None else jax.ShapeDtypeStruct(
        (exogenous.shape[0], exogenous.shape[2]), exogenous.dtype)
    fbk.check_fit(fb, y, x_like, key, e_t, where)
    return fb, key, exogenous


def _closed_loop(model, params, carry, x0, steps, fb, key, exogenous, unroll):
    """The checked loop: step on `x_i`, then `x_(i+1) = feed(y_i, key_i, exogenous[:, i])`. Outputs fed back
    unchanged run on the model's closed-loop kernel where it has one (`model.step.closed_loop`: `chain(lstm,
    dense)`, `chain(gru, dense)` or a stack of them on CPU), with the derivatives of the loop over `step`."""
    e_TB = None if exogenous is None else jnp.swapaxes(exogenous, 0, 1)

    def by_steps(params, carry, x0):
        def body(state, inputs):
            carry, x_t = state
            i, e_t = inputs
            carry, y_t = model.step(params, carry, x_t)
            return (carry, fbk.feed(fb, y_t, fbk.step_key(key, i), e_t, x_t)), y_t

        (carry, _), ys_TB = lax.scan(body, (carry, x0), (jnp.arange(steps), e_TB), length=steps, unroll=unroll)
        return carry, jax.tree.map(lambda y: jnp.swapaxes(y, 0, 1), ys_TB)

    kernel = getattr(model.step, "closed_loop", None)
    if kernel is None or not fbk.is_identity(fb) or exogenous is not None:
        return by_steps(params, carry, x0)

    def on_kernel(params, carry, x0):
        return kernel(params, carry, x0, steps)

    if jax.eval_shape(on_kernel, params, carry, x0) is None:  # the kernel does not apply to these arrays
        return by_steps(params, carry, x0)
    run = jax.custom_jvp(on_kernel)  # derivatives (forward and reverse) of the same loop over `step`
    run.defjvp(lambda primals, tangents: jax.jvp(by_steps, primals, tangents))
    return run(params, carry, x0)


def rollout(model: Cell, params, carry, x0, steps: int, feedback=None, *, key=None, exogenous=None,
            unroll: int = 1):
    """Closed loop from `x0 [B, F]` (`[B]` token ids): `y_1 = step(x0)`, then `x_(t+1) = feedback(y_t)`.

    - `feedback`: a callable `y_t -> x_(t+1)` or a `sj.feedback.Feedback` (identity by default, so the
      model's output size must equal its input size).
    - `key`: required by a sampling feedback (`sj.feedback.sample_token`), refused otherwise; output `i`
      is fed back with `fold_in(key, i)`.
    - `exogenous [B, steps, E]`: inputs known in advance. Row `i` holds the known inputs of the step
      that follows output `ys[:, i]`: `x_(i+1) = concat([feedback(ys[:, i]), exogenous[:, i]], -1)`
      — the step whose value `ys[:, i]` predicts. `x0` already holds the first step's known inputs, so
      `ys[:, 0]` does not see `exogenous` and `ys[:, i]` (i >= 1) sees `exogenous[:, i - 1]`; the last
      row only enters the input that continues the loop.

    Returns `(final_carry, ys [B, steps, out])`. The final carry has consumed `x0 .. x_(steps-1)`;
    `sj.feedback.next_inputs(feedback, ys, key=key, exogenous=exogenous)[:, -1]` is the `x0` that
    continues the same trajectory.
    """
    where = "sj.rollout"
    checks.check_cell(model, where, "model")
    x0 = checks.check_inputs(x0, model.input_spec(params), where, "x0", ("batch",))
    fb, key, exogenous = _prepare(model, params, carry, x0, steps, feedback, key, exogenous, unroll, where)
    return _closed_loop(model, params, carry, x0, steps, fb, key, exogenous, unroll)


def forecast(model: Cell, params, carry, context, steps: int, feedback=None, *, key=None, exogenous=None,
             unroll: int = 1):
    """Warm up on `context [B, T, F]` (`[B, T]` token ids), then predict `steps` outputs in closed loop.

    `future[:, 0]` is the model's output at the last context step (the prediction of the first unknown
    step); each later step feeds the previous prediction back. `feedback`, `key`, `exogenous` and the
    continuation are exactly those of `rollout` started from the last context step: `exogenous[:, i]`
    joins `feedback(future[:, i])`, so its row 0 holds the known inputs of the first unknown step.
    Returns `(final_carry, future [B, steps, out])`.
    """
    where = "sj.forecast"
    checks.check_cell(model, where, "model")
    context = checks.check_inputs(context, model.input_spec(params), where, "context", ("batch", "time"))
    last = context[:, -1]
    fb, key, exogenous = _prepare(model, params, carry, last, steps, feedback, key, exogenous, unroll, where)
    if context.shape[1] > 1:
        carry, _ = scan(model, params, carry, context[:, :-1], unroll=unroll)
    return _closed_loop(model, params, carry, last, steps, fb, key, exogenous, unroll)
