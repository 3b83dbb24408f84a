"""Scheduled sampling (Bengio et al. 2015): training between teacher forcing and the closed loop.

    carry, ys = scheduled_sampling(model, params, carry, xs, ratio=0.75, key=key)

At each step each sample takes the true input `xs[:, t]` with probability `ratio`, else the model's
previous output fed back (`feedback`, as in `sj.rollout`). `ratio=1` is teacher forcing (`sj.scan`),
`ratio=0` is free running (`sj.rollout` from `xs[:, 0]`). `objective(...)` wraps it for the steps of
`seqjax.train` (stateless and stateful).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from seqjax import checks
from seqjax import feedback as fbk
from seqjax.cell import Cell
from seqjax.loop import carry_dtype, tree_where
from seqjax.scan import scan
from seqjax.train.objective import LossAux, Objective

__all__ = ["objective", "scheduled_sampling"]


def _check_ratio(ratio, where):
    if isinstance(ratio, bool):
        raise TypeError(f"{where}: ratio must be a float in [0, 1] or a scalar float array; got {ratio!r}")
    if isinstance(ratio, (int, float)):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"{where}: ratio (the probability of the true input) must be in [0, 1]; got {ratio}")
        return float(ratio)
    ratio = checks.as_array(ratio, where, "ratio")
    if ratio.ndim != 0 or not jnp.issubdtype(ratio.dtype, jnp.floating):
        raise ValueError(f"{where}: ratio must be a float in [0, 1] or a scalar float array; got shape "
                         f"{tuple(ratio.shape)} dtype {ratio.dtype}")
    return ratio


def _check_exogenous_features(n, features, where):
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{where}: exogenous_features must be an int >= 0; got {n!r}")
    if n and (features is None or n >= features):
        raise ValueError(f"{where}: exogenous_features must be fewer than the input's {features} features (the "
                         f"rest are fed back); got {n}")
    return n


def scheduled_sampling(model: Cell, params, carry, xs, *, ratio, key, feedback=None, exogenous_features: int = 0,
                       mask=None, unroll: int = 1):
    """Run `model` over `xs [B, T, F]` (`[B, T]` token ids), mixing true inputs and fed-back outputs.

    - Step 0 takes `xs[:, 0]`; step t > 0 takes, per sample, `xs[:, t]` with probability `ratio` (a float
      or a scalar array, so a decaying schedule needs no recompile), else `feedback(y_(t-1))`.
    - `feedback`: as in `sj.rollout` (identity by default). `exogenous_features = E`: the last E features
      of `xs` are inputs known in advance and always come from `xs`: the fed-back input is
      `concat([feedback(y_(t-1)), xs[:, t, -E:]])`.
    - `key` (required): the coin flips (`fold_in(k_coin, t)`), a sampling feedback's draws
      (`fold_in(k_feedback, t - 1)`) and the cell's variational dropout masks (one per call, as `sj.scan`
      with a key), from `k_coin, k_feedback, k_dropout = jax.random.split(key, 3)`.
    - `mask [B, T]` bool, as in `sj.scan`: a masked step leaves the carry and the previous output alone
      (its output repeats the previous one); a sample's first valid step always takes the true input.

    Gradients flow through fed-back outputs (wrap `feedback` in `lax.stop_gradient` to cut them).
    Returns `(final_carry, ys [B, T, out])`.
    """
    where = "sj.teacher.scheduled_sampling"
    checks.check_cell(model, where, "model")
    spec = model.input_spec(params)
    xs = checks.check_inputs(xs, spec, where, "xs", ("batch", "time"))
    batch, time = xs.shape[:2]
    checks.check_carry(model, carry, batch, where)
    ratio = _check_ratio(ratio, where)
    if key is None:
        raise ValueError(f"{where}: key is required (the per-step, per-sample coin flips); pass "
                         f"key=jax.random.key(...)")
    key = checks.check_key(key, where)
    mask = checks.check_flags(mask, batch, time, where, "mask")
    checks.check_unroll(unroll, where)
    n_exo = _check_exogenous_features(exogenous_features, xs.shape[2] if xs.ndim == 3 else None, where)
    fb = fbk.as_feedback(feedback, where)
    x_like = xs[:, 0]
    y_like = jax.eval_shape(lambda p, c, x: model.step(p, c, x)[1], params, carry, x_like)
    e_like = x_like[:, x_like.shape[-1] - n_exo:] if n_exo else None
    fbk.check_fit(fb, y_like, x_like, key if fb.needs_key else None, e_like, where)

    k_coin, k_fb, k_drop = jax.random.split(key, 3)
    noise = model.sample_noise(k_drop, params, batch, carry_dtype(carry, xs.dtype))
    ys_init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), y_like)
    xs_TB = jnp.swapaxes(xs, 0, 1)
    mask_TB = None if mask is None else jnp.swapaxes(mask, 0, 1)

    def body(state, inputs):
        carry, y_prev, seen_B = state
        t, x_true, m_t = inputs
        fed = fbk.feed(fb, y_prev, fbk.step_key(k_fb if fb.needs_key else None, jnp.maximum(t - 1, 0)),
                       x_true[:, x_true.shape[-1] - n_exo:] if n_exo else None, x_true)
        use_true = ~seen_B | jax.random.bernoulli(jax.random.fold_in(k_coin, t), ratio, (batch,))
        x_t = tree_where(use_true, x_true, fed)
        new_carry, y_t = model.step(params, carry, x_t, noise)
        if m_t is None:
            return (new_carry, y_t, jnp.ones_like(seen_B)), y_t
        carry = tree_where(m_t, new_carry, carry)
        y_t = tree_where(m_t, y_t, y_prev)
        return (carry, y_t, seen_B | m_t), y_t

    state0 = (carry, ys_init, jnp.zeros((batch,), bool))
    (carry, _, _), ys_TB = lax.scan(body, state0, (jnp.arange(time), xs_TB, mask_TB), unroll=unroll)
    return carry, jax.tree.map(lambda y: jnp.swapaxes(y, 0, 1), ys_TB)


def objective(model: Cell, loss, *, ratio, feedback=None, exogenous_features: int = 0, unroll: int = 1):
    """A `seqjax.train.Objective` training `model` with scheduled sampling at a fixed `ratio`.

    `loss(pred, batch.targets, batch.mask)` (e.g. `seqjax.losses.mse`) on the outputs of
    `scheduled_sampling(model, params, carry, batch.inputs, ratio=, key=, mask=)`; a `[B, T]` batch mask
    is also the run's mask. The carry is passed on, so it works in the stateless and the stateful steps.
    In evaluation (`key=None`) it is the teacher-forced loss (`sj.scan`, no dropout).
    """
    where = "sj.teacher.objective"
    checks.check_cell(model, where, "model")
    if not callable(loss):
        raise TypeError(f"{where}: loss must be a callable (pred, target, mask) -> scalar such as "
                        f"seqjax.losses.mse; got {type(loss).__name__}")
    ratio = _check_ratio(ratio, where)
    fbk.as_feedback(feedback, where)

    def loss_fn(params, carry, batch, key):
        step_mask = batch.mask if batch.mask is not None and jnp.ndim(batch.mask) == 2 else None
        if key is None:
            carry, pred = scan(model, params, carry, batch.inputs, mask=step_mask, unroll=unroll)
        else:
            carry, pred = scheduled_sampling(model, params, carry, batch.inputs, ratio=ratio, key=key,
                                             feedback=feedback, exogenous_features=exogenous_features,
                                             mask=step_mask, unroll=unroll)
        return loss(pred, batch.targets, batch.mask), LossAux(carry, {})

    return Objective(loss_fn=loss_fn, initial_carry=lambda batch_size: model.initial_carry(batch_size),
                     name=f"scheduled_sampling({model.name})")
