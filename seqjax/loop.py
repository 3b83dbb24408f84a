"""The time-major sequence machinery every sequence function shares.

Arrays here are time-major (`xs_TB...`, `mask_TB`): `lax.scan` walks the leading axis. The public,
batch-major entry point is `seqjax.scan`, which checks its arguments and transposes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from seqjax.cell import Cell


def tree_where(cond_B, new, old):
    """Per sample: `new` where `cond_B` is true, else `old`, for every `[B, ...]` leaf."""

    def pick(n, o):
        c = jnp.reshape(cond_B, cond_B.shape + (1,) * (n.ndim - 1))
        return jnp.where(c, n, o)

    return jax.tree.map(pick, new, old)


def carry_dtype(carry, default=jnp.float32):
    leaves = jax.tree.leaves(carry)
    return leaves[0].dtype if leaves else default


def fill_masked(ys_TB, mask_TB, masked_output):
    """Outputs at masked steps: the previous valid output (zeros before the first; `masked_output` "previous"
    or None), or zeros ("zero").

    `ys_TB` is a pytree of `[T, B, ...]` arrays, `mask_TB [T, B]` bool (None: nothing masked).
    """
    if mask_TB is None:
        return ys_TB
    if masked_output == "zero":
        return jax.tree.map(lambda y: jnp.where(_expand(mask_TB, y), y, jnp.zeros_like(y)), ys_TB)
    steps = jnp.arange(mask_TB.shape[0], dtype=jnp.int32)[:, None]
    last_valid_TB = lax.cummax(jnp.where(mask_TB, steps, -1), axis=0)
    seen_TB = last_valid_TB >= 0
    index_TB = jnp.maximum(last_valid_TB, 0)

    def fill(y):
        idx = jnp.reshape(index_TB, index_TB.shape + (1,) * (y.ndim - 2))
        gathered = jnp.take_along_axis(y, jnp.broadcast_to(idx, y.shape), axis=0)
        return jnp.where(_expand(seen_TB, y), gathered, jnp.zeros_like(y))

    return jax.tree.map(fill, ys_TB)


def _expand(mask_TB, y):
    return jnp.reshape(mask_TB, mask_TB.shape + (1,) * (y.ndim - 2))


def scan_steps(cell: Cell, params, carry, xs_TB, *, mask_TB=None, reset_TB=None, noise=None, unroll=1,
               masked_output="previous"):
    """The reference sequence function: one `lax.scan` over `cell.step`.

    Where `reset_TB[t, b]`, sample b's carry becomes the cell's initial carry before step t; where
    `mask_TB[t, b]` is false, sample b's carry is left as it was and its output is filled as
    `fill_masked` says. Returns `(final_carry, ys_TB)`.
    """
    batch = jax.tree.leaves(xs_TB)[0].shape[1]
    fresh = cell.initial_carry(batch, carry_dtype(carry)) if reset_TB is not None else None

    def body(carry, inputs):
        x_t, m_t, r_t = inputs
        if r_t is not None:
            carry = tree_where(r_t, fresh, carry)
        new_carry, y_t = cell.step(params, carry, x_t, noise)
        if m_t is not None:
            new_carry = tree_where(m_t, new_carry, carry)
        return new_carry, y_t

    carry, ys_TB = lax.scan(body, carry, (xs_TB, mask_TB, reset_TB), unroll=unroll)
    return carry, fill_masked(ys_TB, mask_TB, masked_output)


def run_sequence(cell: Cell, params, carry, xs_TB, *, mask_TB=None, reset_TB=None, noise=None, unroll=1,
                 masked_output="previous"):
    """The cell's own sequence function when it has one (the fast path), else `scan_steps`."""
    fn = cell.sequence if cell.sequence is not None else (lambda *a, **k: scan_steps(cell, *a, **k))
    return fn(params, carry, xs_TB, mask_TB=mask_TB, reset_TB=reset_TB, noise=noise, unroll=unroll,
              masked_output=masked_output)
