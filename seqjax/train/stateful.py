"""Stateful training: the carry passes from chunk to chunk (truncated backpropagation through time).

This is Keras's `stateful=True` with `shuffle=False` and `reset_states()` once per epoch, made explicit:
chunk `k + 1` of every row continues chunk `k` because the step returns the carry and takes it back;
gradients stop at the chunk boundary (`lax.stop_gradient` on the incoming carry), so each chunk is one
truncated-BPTT segment; an epoch starts from a fresh carry.

    obj = seqjax.train.objective(model, seqjax.losses.mse)
    chunks = seqjax.data.stateful_pairs(series, batch_size=8, chunk_length=50)   # xs [n, 8, 50, F]
    run_epoch = seqjax.train.make_stateful_epoch(obj, optimizer)
    for epoch in range(epochs):
        state, carry, metrics = run_epoch(state, chunks)        # one lax.scan over all n chunks
    # carry[row] is each stream's state after its last chunk: continue those streams from it, e.g.
    carry, more = seqjax.train.make_stateful_eval(obj)(state.params, next_chunks, carry)
    carry, future = sj.rollout(model, state.params, carry, x_next_BF, 100)   # or forecast closed-loop

`make_stateful_train_step` is the same update for one chunk at a time (online learning, custom loops).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from seqjax.loop import tree_where
from seqjax.train._batch import as_batch, leading_size
from seqjax.train._cache import cached_jit
from seqjax.train._guard import shape_guard
from seqjax.train._update import apply_gradients, checked_training, loss_and_grads, select, step_key, value_fn
from seqjax.train.objective import Objective, call_loss, objective_for_eval
from seqjax.train.state import NonFiniteError, TrainBatch
from seqjax.train.step import RECOMPILE_HINT, check_state, nonfinite_message

CARRY_HINT = " — a carry from another model or batch size?"


def check_carry(obj: Objective, carry, batch_size: int, where: str, argument: str = "carry") -> None:
    """`carry` must have the structure, shapes and dtype kinds of `obj.initial_carry(batch_size)`."""
    expected = jax.eval_shape(lambda: obj.initial_carry(batch_size))
    exp_def, got_def = jax.tree.structure(expected), jax.tree.structure(carry)
    if exp_def != got_def:
        raise ValueError(f"{where}: {argument} must have the structure of {obj.name}'s initial_carry({batch_size}), "
                         f"{exp_def}; got {got_def}{CARRY_HINT}")
    for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(carry)):
        if tuple(np.shape(g)) != tuple(e.shape):
            raise ValueError(f"{where}: {argument} leaves must have the shapes of {obj.name}'s "
                             f"initial_carry({batch_size}), e.g. {tuple(e.shape)}; got {tuple(np.shape(g))}"
                             f"{CARRY_HINT}")


def _fresh_like(obj: Objective, carry, batch_size: int):
    fresh = obj.initial_carry(batch_size)
    return jax.tree.map(lambda f, c: f.astype(c.dtype), fresh, carry)


def _apply_reset(obj: Objective, carry, batch: TrainBatch, batch_size: int):
    """A `[]` or `[B]` reset replaces those rows' carry now; a `[B, T]` reset stays in the batch."""
    if batch.reset is None or jnp.ndim(batch.reset) == 2:
        return carry, batch
    if jnp.ndim(batch.reset) > 2 or (jnp.ndim(batch.reset) == 1 and jnp.shape(batch.reset)[0] != batch_size):
        raise ValueError(f"seqjax.train: reset must be [], [batch] or [batch, time] bool with batch {batch_size}; "
                         f"got shape {jnp.shape(batch.reset)}")
    reset_B = jnp.broadcast_to(batch.reset, (batch_size,))
    return tree_where(reset_B, _fresh_like(obj, carry, batch_size), carry), batch._replace(reset=None)


def chunk_update(obj: Objective, optimizer, clip_norm, where: str):
    """`update(state, carry, chunk) -> (state, carry, metrics)`: one truncated-BPTT step."""

    def update(state, carry, batch):
        batch_size = leading_size(batch.inputs, where, "batch.inputs")
        carry, batch = _apply_reset(obj, lax.stop_gradient(carry), batch, batch_size)
        key = step_key(state)
        (value, aux), grads = loss_and_grads(obj, state.params, carry, batch, key, where)
        new_state, metrics = apply_gradients(state, value, aux, grads, optimizer, clip_norm,
                                             value_fn=value_fn(obj, carry, batch, key, where))
        return new_state, aux.carry, metrics

    return update


def _build_step(obj: Objective, optimizer, clip_norm, donate: bool):
    update = chunk_update(obj, optimizer, clip_norm, "seqjax.train.make_stateful_train_step")
    return jax.jit(update, donate_argnums=(0,) if donate else ())


class StatefulTrainStep:
    """`step(state, carry, chunk) -> (state, carry, metrics)` (see `make_stateful_train_step`)."""

    def __init__(self, obj, optimizer, *, clip_norm, on_nonfinite, allow_recompile, donate):
        self.where = "seqjax.train.StatefulTrainStep"
        self.obj = obj
        self.on_nonfinite = on_nonfinite
        self.guard = shape_guard(
            allow_recompile, self.where, ("state", "carry", "chunk"), {"chunk": RECOMPILE_HINT, "carry": CARRY_HINT})
        self.jitted = cached_jit(_build_step, obj, optimizer, clip_norm, donate)

    def __call__(self, state, carry, chunk):
        state = check_state(state, self.where)
        chunk = as_batch(chunk, self.where, "chunk")
        if self.guard is None or self.guard.compiled is None:  # later calls: the guard compares with this one
            check_carry(self.obj, carry, leading_size(chunk.inputs, self.where, "chunk.inputs"), self.where)
        if self.guard is not None:
            self.guard.check(state, carry, chunk)
        state, new_carry, metrics = self.jitted(state, carry, chunk)
        if self.on_nonfinite == "raise" and bool(metrics["nonfinite"]):
            raise NonFiniteError(nonfinite_message(self.where, metrics), state, metrics, carry=carry)
        return state, new_carry, metrics


def make_stateful_train_step(model, loss, optimizer=None, *, clip_norm=None, on_nonfinite: str = "skip",
                             allow_recompile: bool = False, donate: bool = True) -> StatefulTrainStep:
    """One compiled truncated-BPTT step `(state, carry, chunk) -> (state, carry, metrics)`.

    Called as `(model, loss, optimizer)` or `(objective, optimizer)`, as `make_train_step`.

    - `carry`: the carry entering the chunk (`objective.initial_carry(B)` to start); gradients do not flow
      into it (`stop_gradient`). The returned carry is the one after the chunk, to pass to the next.
    - `chunk`: a `TrainBatch` (or tuple) of `[B, T, ...]` arrays; `chunk.reset` `[]`/`[B]` replaces those
      rows' carry with a fresh one before the chunk, `[B, T]` before that step; `chunk.mask [B, T]` marks
      padded steps (they leave the carry alone and do not count in the loss).
    - `clip_norm`, `on_nonfinite`, `allow_recompile`, `donate`: as in `make_train_step` (only the state is
      donated, never the carry). A skipped chunk still returns the carry its forward pass computed (with
      the unchanged params); `"raise"` raises `NonFiniteError` with `.state` (update not applied, step
      advanced) and `.carry` (the carry that entered the chunk).

    A carry of another structure or shape than `objective.initial_carry(B)` is refused with a ValueError.
    """
    where = "seqjax.train.make_stateful_train_step"
    obj, optimizer = checked_training(model, loss, optimizer, clip_norm, on_nonfinite, where)
    return StatefulTrainStep(obj, optimizer, clip_norm=clip_norm, on_nonfinite=on_nonfinite,
                             allow_recompile=allow_recompile, donate=donate)


def _chunks(chunks, where: str) -> tuple[TrainBatch, int, int]:
    chunks = as_batch(chunks, where, "chunks")
    num_chunks = leading_size(chunks.inputs, where, "chunks.inputs", axis=0)
    batch_size = leading_size(chunks.inputs, where, "chunks.inputs", axis=1)
    for name in ("targets", "mask", "reset"):
        value = getattr(chunks, name)
        if value is not None and leading_size(value, where, f"chunks.{name}", axis=0) != num_chunks:
            raise ValueError(f"{where}: chunks.{name} must have the {num_chunks} chunks of chunks.inputs on axis 0; "
                             f"got shapes {[tuple(np.shape(x)) for x in jax.tree.leaves(value)]}")
    return chunks, num_chunks, batch_size


def _build_epoch(obj: Objective, optimizer, clip_norm, halt: bool, donate: bool):
    update = chunk_update(obj, optimizer, clip_norm, "seqjax.train.make_stateful_epoch")

    def run(state, carry, chunks):
        def body(acc, chunk):
            state, carry, halted = acc
            new_state, new_carry, metrics = update(state, carry, chunk)
            if halt:  # stop at the first bad chunk: keep the state and carry that entered it
                stop = halted | metrics["nonfinite"]
                new_state, new_carry = select(stop, (state, carry), (new_state, new_carry))
                halted = stop
            return (new_state, new_carry, halted), metrics

        (state, carry, _), metrics = lax.scan(body, (state, carry, jnp.zeros((), bool)), chunks)
        return state, carry, metrics

    return jax.jit(run, donate_argnums=(0,) if donate else ())


class StatefulEpoch:
    """`run(state, chunks, carry=None) -> (state, carry, metrics)` (see `make_stateful_epoch`)."""

    def __init__(self, obj, optimizer, *, clip_norm, on_nonfinite, allow_recompile, donate):
        self.where = "seqjax.train.StatefulEpoch"
        self.obj = obj
        self.on_nonfinite = on_nonfinite
        self.guard = shape_guard(
            allow_recompile, self.where, ("state", "carry", "chunks"), {"chunks": RECOMPILE_HINT, "carry": CARRY_HINT})
        self.jitted = cached_jit(_build_epoch, obj, optimizer, clip_norm, on_nonfinite == "raise", donate)

    def __call__(self, state, chunks, carry=None):
        state = check_state(state, self.where)
        chunks, _, batch_size = _chunks(chunks, self.where)
        if carry is None:
            carry = self.obj.initial_carry(batch_size)
        else:
            check_carry(self.obj, carry, batch_size, self.where)
        if self.guard is not None:
            self.guard.check(state, carry, chunks)
        state, carry, metrics = self.jitted(state, carry, chunks)
        if self.on_nonfinite == "raise":
            bad = np.asarray(metrics["nonfinite"])
            if bad.any():
                index = int(np.argmax(bad))
                raise NonFiniteError(nonfinite_message(self.where, metrics, index), state, metrics, index, carry)
        return state, carry, metrics


def make_stateful_epoch(model, loss, optimizer=None, *, clip_norm=None, on_nonfinite: str = "skip",
                        allow_recompile: bool = False, donate: bool = True) -> StatefulEpoch:
    """One compiled pass over aligned chunks: `(state, chunks, carry=None) -> (state, carry, metrics)`.

    Called as `(model, loss, optimizer)` or `(objective, optimizer)`, as `make_train_step`.

    - `chunks`: a `seqjax.data.StatefulPairs` (from `seqjax.data.stateful_pairs`) or a `TrainBatch` of
      stacked chunks, `inputs [n, B, T, F]`, `targets [n, B, ...]`, `mask [n, B, T]`, `reset [n]`/`[n, B]`/
      `[n, B, T]`; all `n` chunks run in order inside one `lax.scan`, each a truncated-BPTT step of
      `make_stateful_train_step`.
    - `carry`: `None` starts from `objective.initial_carry(B)` (Keras's `reset_states()` at the epoch
      start); pass a carry to continue a run, e.g. the remaining chunks of an interrupted epoch.
    - Returns the state, the carry after the last chunk (continue evaluating or forecasting from it) and
      `metrics`, a dict of `[n]` arrays, one entry per chunk.
    - `on_nonfinite="raise"`: the scan stops updating at the first bad chunk `k`; `NonFiniteError` carries
      `.state` and `.carry` as they entered chunk `k` and `.index = k`. `"skip"` skips bad chunks only.
    - `allow_recompile`: a different number of chunks, batch or chunk length is refused by default.
    """
    where = "seqjax.train.make_stateful_epoch"
    obj, optimizer = checked_training(model, loss, optimizer, clip_norm, on_nonfinite, where)
    return StatefulEpoch(obj, optimizer, clip_norm=clip_norm, on_nonfinite=on_nonfinite,
                         allow_recompile=allow_recompile, donate=donate)


def _build_eval(obj: Objective):
    where = "seqjax.train.make_stateful_eval"

    def evaluate(params, carry, chunks):
        def body(carry, chunk):
            batch_size = leading_size(chunk.inputs, where, "chunks.inputs")
            carry, chunk = _apply_reset(obj, carry, chunk, batch_size)
            value, aux = call_loss(obj, params, carry, chunk, None, where)
            return aux.carry, {"loss": value, **aux.metrics}

        return lax.scan(body, carry, chunks)

    return jax.jit(evaluate)


class StatefulEval:
    """`evaluate(params, chunks, carry=None) -> (carry, metrics)` (see `make_stateful_eval`)."""

    def __init__(self, obj: Objective, allow_recompile: bool):
        self.where = "seqjax.train.StatefulEval"
        self.obj = obj
        self.guard = shape_guard(
            allow_recompile, self.where, ("params", "carry", "chunks"), {"chunks": RECOMPILE_HINT, "carry": CARRY_HINT})
        self.jitted = cached_jit(_build_eval, obj)

    def __call__(self, params, chunks, carry=None):
        chunks, _, batch_size = _chunks(chunks, self.where)
        if carry is None:
            carry = self.obj.initial_carry(batch_size)
        else:
            check_carry(self.obj, carry, batch_size, self.where)
        if self.guard is not None:
            self.guard.check(params, carry, chunks)
        return self.jitted(params, carry, chunks)


def make_stateful_eval(model, loss=None, *, allow_recompile: bool = False) -> StatefulEval:
    """Forward pass over aligned chunks, carry passed on, no dropout: `(params, chunks, carry=None) ->
    (carry, metrics)` with `metrics` a dict of `[n]` per-chunk values (`loss` and the objective's metrics).

    The per-chunk losses equal those of slicing one pass over the whole sequence, since the carry
    continues exactly; the returned carry is ready for `sj.forecast`/`sj.rollout` or more chunks.
    """
    return StatefulEval(objective_for_eval(model, loss, "seqjax.train.make_stateful_eval"), allow_recompile)
