"""What a training step carries from one call to the next, and what one batch holds."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from seqjax import checks


class TrainState(NamedTuple):
    """Everything one step replaces: a pytree, donated to the compiled step.

    - `params`: the model's params;
    - `opt_state`: `optimizer.init(params)`, optax's own state types;
    - `step`: int32 scalar, the number of batches (or chunks) processed, including batches whose update
      was skipped for a non-finite loss or gradient;
    - `key`: the PRNG key of the run; step `n` draws its dropout masks from `jax.random.fold_in(key, n)`,
      so the key itself never changes and a resumed run draws the same masks.
    """

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


def init_state(params, optimizer, *, key=None) -> TrainState:
    """A fresh `TrainState`: `optimizer.init(params)`, step 0, and `key` (default `jax.random.key(0)`).

    Any optax optimizer works (`optax.adam(1e-3)`, `optax.chain(...)`, `optax.inject_hyperparams(...)`, ...).
    """
    where = "seqjax.train.init_state"
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(f"{where}: optimizer must be an optax.GradientTransformation (optax.adam(1e-3), ...); "
                        f"got {type(optimizer).__name__}")
    key = jax.random.key(0) if key is None else checks.check_key(key, where)
    # Fresh buffers, one per leaf: the compiled steps donate the state, which must alias neither the
    # caller's params and key nor itself (optimizers may put one zeros array in two slots of their state).
    params = jax.tree.map(lambda x: jnp.copy(jnp.asarray(x)), params)
    opt_state = jax.tree.map(lambda x: jnp.copy(x) if isinstance(x, jax.Array) else x, optimizer.init(params))
    return TrainState(params, opt_state, jnp.zeros((), jnp.int32), jnp.copy(key))


class TrainBatch(NamedTuple):
    """One batch (stateless) or one chunk (stateful) of supervised data, batch-major.

    - `inputs`: `[B, T, F]` (`[B, T]` token ids), or any pytree of `[B, ...]` arrays for a custom objective;
    - `targets`: what the loss compares the outputs with, e.g. `[B, T, F_out]`, `[B, T]` class ids, `[B, F]`;
    - `mask`: optional bool, `[B, T]` (steps that count; also the scan's mask) or `[B]` (samples that count,
      e.g. the padded rows of `seqjax.data.batches(..., remainder="pad")`);
    - `reset`: optional bool, `[]` or `[B]` (replace that sample's carry by a fresh one before this chunk)
      or `[B, T]` (before that step: episode boundaries inside a chunk).

    Steps also take a tuple `(inputs, targets[, mask[, reset]])`, a `seqjax.data.Pairs`, a
    `seqjax.data.StatefulPairs` (for epochs) or a `seqjax.data.Batch` of `(inputs, targets[, step_mask])`.
    """

    inputs: Any
    targets: Any
    mask: Any = None
    reset: Any = None


class NonFiniteError(FloatingPointError):
    """A step met a NaN or Inf loss or gradient with `on_nonfinite="raise"`; nothing was applied.

    `state` is the state to continue from (the update was not applied: the params and optimizer state are
    those from before the bad batch), `metrics` the step's metrics, `index` the chunk of an epoch where
    it happened (None for a single step), and `carry` the carry entering that chunk (None when stateless).
    """

    def __init__(self, message: str, state: TrainState, metrics: dict, index=None, carry=None):
        super().__init__(message)
        self.state = state
        self.metrics = metrics
        self.index = index
        self.carry = carry
