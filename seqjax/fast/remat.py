"""Rematerialisation over chunks of time: long sequences train in memory that grows with the chunk count.

`sj.scan(..., remat=K)` runs the sequence as `T // K` chunks of `K` steps (plus a shorter last chunk),
each under `jax.checkpoint`: the backward pass keeps only the carry at each chunk boundary and
recomputes one chunk's forward pass at a time, so training stores `O(T / K + K)` steps of activations
instead of `O(T)` (about `K = sqrt(T)` is the smallest). The numbers are those of the plain call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from seqjax.loop import fill_masked, run_sequence


def check_remat(remat, where: str):
    """`None` (off) or an int >= 1: steps per checkpointed chunk."""
    if remat is None:
        return None
    if isinstance(remat, bool) or not isinstance(remat, int) or remat < 1:
        raise ValueError(f"{where}: remat must be None or an int >= 1 (steps per checkpointed chunk); "
                         f"got {remat!r}")
    return remat


def _contains_whole_sequence_cell(cell) -> bool:
    """Whether some part needs the whole sequence at once (a bidirectional layer), so chunks would differ."""
    if cell.step is None or cell.name == "bidirectional":
        return True
    parts = cell.config.get("parts", ()) if hasattr(cell, "config") else ()
    return any(_contains_whole_sequence_cell(p) for p in parts)


def remat_sequence(cell, params, carry, xs_TB, *, mask_TB=None, reset_TB=None, noise=None, unroll=1,
                   masked_output="previous", chunk: int, where: str = "sj.scan"):
    """`run_sequence` over time-major inputs in checkpointed chunks of `chunk` steps; same results."""
    if _contains_whole_sequence_cell(cell):
        raise ValueError(f"{where}: remat needs a cell that runs step by step; got {cell.name!r}, which "
                         "contains a layer that reads the whole sequence (bidirectional) — use remat=None")
    time = jax.tree.leaves(xs_TB)[0].shape[0]
    chunk = min(chunk, time)
    full, rest = divmod(time, chunk)

    # Inside a chunk, masked steps output zeros; the outputs are filled once over the whole sequence
    # below, so a chunk that starts with masked steps still repeats the previous chunk's last output.
    @jax.checkpoint
    def run_chunk(carry, inputs):
        xs, mask, reset = inputs
        return run_sequence(cell, params, carry, xs, mask_TB=mask, reset_TB=reset, noise=noise, unroll=unroll,
                            masked_output="zero")

    inputs = (xs_TB, mask_TB, reset_TB)
    head = jax.tree.map(lambda a: a[:full * chunk].reshape((full, chunk) + a.shape[1:]), inputs)
    carry, ys = lax.scan(run_chunk, carry, head)
    ys = jax.tree.map(lambda y: y.reshape((full * chunk,) + y.shape[2:]), ys)
    if rest:
        carry, ys_rest = run_chunk(carry, jax.tree.map(lambda a: a[full * chunk:], inputs))
        ys = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=0), ys, ys_rest)
    return carry, fill_masked(ys, mask_TB, masked_output)
