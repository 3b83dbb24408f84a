"""The shared inside of every compiled step: gradients, clipping, the non-finite guard, the optax update."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from seqjax.train.objective import LossAux, Objective, call_loss, check_objective, objective_and_optimizer
from seqjax.train.state import TrainState

ON_NONFINITE = ("skip", "raise")


def check_optimizer(optimizer, where: str):
    """An optax optimizer: a `GradientTransformation` or an object with `init` and `update` (`optax.MultiSteps`)."""
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(f"{where}: optimizer must be an optax.GradientTransformation (optax.adam(1e-3), ...); "
                        f"got {type(optimizer).__name__}")
    return optimizer


def check_options(optimizer, clip_norm, on_nonfinite, where: str):
    check_optimizer(optimizer, where)
    if clip_norm is not None and (isinstance(clip_norm, bool) or not isinstance(clip_norm, (int, float))
                                  or not clip_norm > 0):
        raise ValueError(f"{where}: clip_norm must be None or a number > 0 (the maximum global gradient norm); "
                         f"got {clip_norm!r}")
    if on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"{where}: on_nonfinite must be one of {list(ON_NONFINITE)}; got {on_nonfinite!r}")


def checked_training(model, loss, optimizer, clip_norm, on_nonfinite, where: str) -> tuple[Objective, object]:
    """The step factories' shared front: `(model, loss, optimizer)` or `(objective, optimizer)` as
    `(objective, optimizer)`, with the objective and the options checked."""
    obj, optimizer = objective_and_optimizer(model, loss, optimizer, where)
    obj = check_objective(obj, where)
    check_options(optimizer, clip_norm, on_nonfinite, where)
    return obj, optimizer


def select(ok, new, old):
    """`new` where the scalar bool `ok`, else `old`, leaf by leaf (bit-exact: no arithmetic)."""
    return jax.tree.map(lambda n, o: jax.lax.select(ok, n, o) if hasattr(n, "dtype") else n, new, old)


def loss_and_grads(obj: Objective, params, carry, batch, key, where: str):
    """`(loss, LossAux(carry, metrics)), grads` of `obj.loss_fn` at `params`."""

    def fn(p):
        return call_loss(obj, p, carry, batch, key, where)

    return jax.value_and_grad(fn, has_aux=True)(params)


def value_fn(obj: Objective, carry, batch, key, where: str):
    """The loss of this batch as a function of the params alone (for line-search optimizers)."""
    return lambda p: call_loss(obj, p, carry, batch, key, where)[0]


def apply_gradients(state: TrainState, value, aux: LossAux, grads, optimizer, clip_norm, value_fn=None):
    """The next state and the step's metrics.

    Optimizers that take extra arguments (`optax.GradientTransformationExtraArgs`: `optax.lbfgs`'s line
    search, `optax.polyak_sgd`) get `value`, `grad` and `value_fn` (the loss as a function of the params).

    The update is applied only when the loss and the global gradient norm are finite; otherwise params
    and optimizer state are returned unchanged, bit for bit. The step count always advances. Metrics:
    `loss`, `grad_norm` (before clipping), `nonfinite` (bool) and the objective's own metrics.
    """
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(value) & jnp.isfinite(grad_norm)
    if clip_norm is not None:
        grads, _ = optax.clip_by_global_norm(clip_norm).update(grads, optax.EmptyState())
    if isinstance(optimizer, (optax.GradientTransformationExtraArgs, optax.MultiSteps)):
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params, value=value, grad=grads,
                                              value_fn=value_fn)
    else:
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = TrainState(select(finite, params, state.params), select(finite, opt_state, state.opt_state),
                           state.step + 1, state.key)
    metrics = {"loss": value, "grad_norm": grad_norm, "nonfinite": ~finite, **aux.metrics}
    return new_state, metrics


def step_key(state: TrainState):
    """The key of this step's dropout masks: `fold_in(state.key, state.step)`."""
    return jax.random.fold_in(state.key, state.step)
