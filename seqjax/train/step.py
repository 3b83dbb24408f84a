"""Compiled stateless steps: `make_train_step` and `make_eval_step`.

    obj = seqjax.train.objective(model, seqjax.losses.mse)
    optimizer = optax.adam(1e-3)
    state = seqjax.train.init_state(params, optimizer)
    train_step = seqjax.train.make_train_step(obj, optimizer)
    for x_BTF, y_BTF in ...:
        state, metrics = train_step(state, (x_BTF, y_BTF))   # state is donated: use the returned one

Every batch starts from `objective.initial_carry(B)` (Keras's `stateful=False`). The steps are one
`jax.jit` program each, compiled on the first call; a later batch of another shape is refused with a
ValueError naming the shapes instead of silently recompiling (`allow_recompile=True` permits it).
Factories called again with the same objective and optimizer objects reuse the compiled programs.
"""

from __future__ import annotations

import jax
import numpy as np

from seqjax.train._batch import as_batch, leading_size
from seqjax.train._cache import cached_jit
from seqjax.train._guard import shape_guard
from seqjax.train._update import apply_gradients, checked_training, loss_and_grads, step_key, value_fn
from seqjax.train.objective import Objective, call_loss, objective_for_eval
from seqjax.train.state import NonFiniteError, TrainState

RECOMPILE_HINT = (" — a jitted step would silently recompile for it; pad the batch and mask the padding "
                  "(seqjax.data.batches(..., remainder='pad')), drop it, or build the step with "
                  "allow_recompile=True")


def check_state(state, where: str) -> TrainState:
    if not isinstance(state, TrainState):
        raise TypeError(f"{where}: state must be a seqjax.train.TrainState (seqjax.train.init_state(params, "
                        f"optimizer)); got {type(state).__name__}")
    return state


def nonfinite_message(where: str, metrics, index=None) -> str:
    at = "" if index is None else f" at chunk {index}"
    loss = float(np.asarray(metrics["loss"]).reshape(-1)[0 if index is None else index])
    norm = float(np.asarray(metrics["grad_norm"]).reshape(-1)[0 if index is None else index])
    return (f"{where}: non-finite loss or gradient{at} (loss {loss}, gradient norm {norm}); the update was not "
            f"applied — the error's .state holds the unchanged state (on_nonfinite='skip' skips such batches)")


def _build_train_step(obj: Objective, optimizer, clip_norm, donate: bool):
    where = "seqjax.train.make_train_step"

    def step(state: TrainState, batch):
        carry = obj.initial_carry(leading_size(batch.inputs, where, "batch.inputs"))
        key = step_key(state)
        (value, aux), grads = loss_and_grads(obj, state.params, carry, batch, key, where)
        return apply_gradients(state, value, aux, grads, optimizer, clip_norm,
                               value_fn=value_fn(obj, carry, batch, key, where))

    return jax.jit(step, donate_argnums=(0,) if donate else ())


class TrainStep:
    """`step(state, batch) -> (state, metrics)`: one compiled optimizer step (see `make_train_step`)."""

    def __init__(self, obj: Objective, optimizer, *, clip_norm, on_nonfinite, allow_recompile, donate):
        self.on_nonfinite = on_nonfinite
        self.guard = shape_guard(allow_recompile, "seqjax.train.TrainStep", ("state", "batch"),
                                 {"batch": RECOMPILE_HINT})
        self.jitted = cached_jit(_build_train_step, obj, optimizer, clip_norm, donate)

    def __call__(self, state: TrainState, batch):
        state = check_state(state, "seqjax.train.TrainStep")
        batch = as_batch(batch, "seqjax.train.TrainStep")
        if self.guard is not None:
            self.guard.check(state, batch)
        state, metrics = self.jitted(state, batch)
        if self.on_nonfinite == "raise" and bool(metrics["nonfinite"]):
            raise NonFiniteError(nonfinite_message("seqjax.train.TrainStep", metrics), state, metrics)
        return state, metrics


def make_train_step(model, loss, optimizer=None, *, clip_norm=None, on_nonfinite: str = "skip",
                    allow_recompile: bool = False, donate: bool = True) -> TrainStep:
    """One compiled step `(state, batch) -> (state, metrics)` with an optax `optimizer`.

    Two call forms: `make_train_step(model, loss, optimizer)` with a cell and a `(pred, target, mask) ->
    scalar` loss such as `seqjax.losses.mse` (many-to-many: `loss(scan(model, ...), targets, mask)`), or
    `make_train_step(objective, optimizer)` with any `Objective` (`seqjax.train.objective(model, loss,
    metrics=...)`, the autoencoder's, scheduled sampling's, your own).

    - `state`: a `TrainState` (`init_state(params, optimizer)`); it is donated (its buffers are reused
      for the result), so keep using the returned state. `donate=False` keeps the argument alive.
    - `batch`: a `TrainBatch(inputs, targets, mask=None, reset=None)` or a tuple `(inputs, targets[, mask])`;
      each batch starts from `objective.initial_carry(B)`.
    - `clip_norm`: clip the gradients to this global norm (`optax.clip_by_global_norm`) before the update.
    - `on_nonfinite`: when the loss or a gradient is NaN or Inf the update is never applied (params and
      optimizer state stay bit-for-bit as they were; the step count advances). `"skip"` reports it in
      `metrics["nonfinite"]` and goes on; `"raise"` raises `NonFiniteError` after the step (a host sync
      per step) carrying the unchanged state.
    - `allow_recompile`: by default a batch (or state) whose structure, shapes or dtypes differ from the
      first call's raises a ValueError; True lets `jax.jit` compile one program per shape.

    `metrics` is a dict of scalars: `loss`, `grad_norm` (before clipping), `nonfinite`, and the
    objective's own metrics. Dropout masks come from `fold_in(state.key, state.step)`.
    """
    where = "seqjax.train.make_train_step"
    obj, optimizer = checked_training(model, loss, optimizer, clip_norm, on_nonfinite, where)
    return TrainStep(obj, optimizer, clip_norm=clip_norm, on_nonfinite=on_nonfinite,
                     allow_recompile=allow_recompile, donate=donate)


def _build_eval_step(obj: Objective):
    where = "seqjax.train.make_eval_step"

    def evaluate(params, batch):
        carry = obj.initial_carry(leading_size(batch.inputs, where, "batch.inputs"))
        value, aux = call_loss(obj, params, carry, batch, None, where)
        return {"loss": value, **aux.metrics}

    return jax.jit(evaluate)


class EvalStep:
    """`evaluate(params, batch) -> metrics`: the objective's loss and metrics without dropout."""

    def __init__(self, obj: Objective, allow_recompile: bool):
        self.guard = shape_guard(allow_recompile, "seqjax.train.EvalStep", ("params", "batch"),
                                 {"batch": RECOMPILE_HINT})
        self.jitted = cached_jit(_build_eval_step, obj)

    def __call__(self, params, batch):
        batch = as_batch(batch, "seqjax.train.EvalStep")
        if self.guard is not None:
            self.guard.check(params, batch)
        return self.jitted(params, batch)


def make_eval_step(model, loss=None, *, allow_recompile: bool = False) -> EvalStep:
    """One compiled evaluation `(params, batch) -> metrics` (`loss` and the objective's metrics), no dropout,
    each batch from a fresh carry: `make_eval_step(model, loss)` or `make_eval_step(objective)`. Shapes are
    guarded as in `make_train_step`."""
    return EvalStep(objective_for_eval(model, loss, "seqjax.train.make_eval_step"), allow_recompile)
