"""`scan`: run a cell over `[batch, time, ...]` with the carry as an explicit value."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from seqjax import checks
from seqjax.cell import Cell
from seqjax.fast.remat import check_remat, remat_sequence
from seqjax.loop import carry_dtype, run_sequence

MASKED_OUTPUTS = (None, "previous", "zero")


def _time_major(x):
    return jnp.swapaxes(x, 0, 1)


def scan(cell: Cell, params, carry, xs, *, mask=None, reset=None, reverse: bool = False, unroll: int = 1,
         key=None, masked_output: str | None = None, remat: int | None = None):
    """Many-to-many: `(final_carry, ys)` for `xs [B, T, F]` (`[B, T]` token ids for `embed`), `ys [B, T, out]`.

    - `mask [B, T]` bool: where False, that sample's carry is left unchanged and its output is filled as
      Keras fills it for that layer: recurrent cells and chains repeat their previous output (zeros before
      the first valid step), `sj.bidirectional` outputs zeros. `masked_output="previous"` or `"zero"`
      chooses one for every layer. Padding may be anywhere: left, right, holes.
    - `reset [B, T]` bool: where True, that sample's carry is replaced by `cell.initial_carry` before the
      step (episode boundaries inside one batch). A reset step that is also masked leaves the fresh carry.
    - `reverse`: process from the last step to the first; `ys` stays aligned with `xs`.
    - `unroll`: passed to `lax.scan` (1 lets the cell's fast path choose what measured fastest).
    - `remat`: steps per chunk of rematerialisation (`jax.checkpoint` over chunks of the loop): training
      keeps activations of `T / remat + remat` steps instead of `T` (`remat ~ sqrt(T)` is the least); same
      numbers, one more forward pass in the backward pass. `None`: off.
    - `key`: turns on the cell's variational dropout (`sj.lstm(..., dropout=, recurrent_dropout=)`) with
      one mask per call, the same at every step; without a key there is no dropout.

    Continuing a sequence is passing the returned carry to the next call; the chunks give the same
    outputs and carry as one call over the whole sequence.
    """
    where = "sj.scan"
    checks.check_cell(cell, where)
    spec = cell.input_spec(params)
    xs = checks.check_inputs(xs, spec, where, "xs", ("batch", "time"))
    batch, time = xs.shape[:2]
    checks.check_carry(cell, carry, batch, where)
    mask = checks.check_flags(mask, batch, time, where, "mask")
    reset = checks.check_flags(reset, batch, time, where, "reset")
    checks.check_unroll(unroll, where)
    checks.check_choice(masked_output, MASKED_OUTPUTS, where, "masked_output")
    remat = check_remat(remat, where)
    if not isinstance(reverse, bool):
        raise TypeError(f"{where}: reverse must be a bool; got {reverse!r}")
    key = checks.check_key(key, where)
    noise = None if key is None else cell.sample_noise(key, params, batch, carry_dtype(carry, xs.dtype))

    xs_TB, mask_TB, reset_TB = (None if a is None else _time_major(a) for a in (xs, mask, reset))
    if reverse:
        xs_TB, mask_TB, reset_TB = (None if a is None else jnp.flip(a, 0) for a in (xs_TB, mask_TB, reset_TB))
    run = run_sequence if remat is None else functools.partial(remat_sequence, chunk=remat, where=where)
    carry, ys_TB = run(cell, params, carry, xs_TB, mask_TB=mask_TB, reset_TB=reset_TB, noise=noise,
                       unroll=unroll, masked_output=masked_output)
    if reverse:
        ys_TB = jax.tree.map(lambda y: jnp.flip(y, 0), ys_TB)
    return carry, jax.tree.map(_time_major, ys_TB)
