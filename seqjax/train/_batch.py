"""Normalising what callers pass as a batch into a `TrainBatch`, in Python before the compiled call."""

from __future__ import annotations

import jax
import numpy as np

from seqjax import data
from seqjax.train.state import TrainBatch


def as_batch(batch, where: str, argument: str = "batch") -> TrainBatch:
    """A `TrainBatch` from a `TrainBatch`, `data.Pairs`, `data.StatefulPairs`, `data.Batch` or a 2-4 tuple."""
    if isinstance(batch, TrainBatch):
        out = batch
    elif isinstance(batch, data.StatefulPairs):
        out = TrainBatch(batch.xs, batch.ys, batch.mask, batch.reset)
    elif isinstance(batch, data.Pairs):
        out = TrainBatch(batch.inputs, batch.targets)
    elif isinstance(batch, data.StatefulBatches):
        raise TypeError(f"{where}: {argument} is a seqjax.data.StatefulBatches, which has no targets; use "
                        f"seqjax.data.stateful_pairs(...) for next-step targets, or TrainBatch(sb.xs, targets, "
                        f"sb.mask, sb.reset) (targets=sb.xs to reconstruct the inputs)")
    elif isinstance(batch, data.Batch):
        if len(batch.arrays) not in (2, 3):
            raise ValueError(f"{where}: {argument} is a seqjax.data.Batch of {len(batch.arrays)} arrays; expected "
                             f"batches(inputs, targets[, step_mask], ...)")
        row_mask = np.asarray(batch.mask)
        mask = row_mask
        if len(batch.arrays) == 3:
            step_mask = np.asarray(batch.arrays[2])
            mask = step_mask & row_mask.reshape(row_mask.shape + (1,) * (step_mask.ndim - 1))
        out = TrainBatch(batch.arrays[0], batch.arrays[1], mask)
    elif type(batch) in (tuple, list):
        if not 2 <= len(batch) <= 4:
            raise ValueError(f"{where}: {argument} must be (inputs, targets[, mask[, reset]]); got a "
                             f"{type(batch).__name__} of {len(batch)}")
        out = TrainBatch(*batch)
    else:
        raise TypeError(f"{where}: {argument} must be a TrainBatch or a tuple (inputs, targets[, mask[, reset]]); "
                        f"got {type(batch).__name__}")
    for name in ("mask", "reset"):
        flags = getattr(out, name)
        if flags is not None:
            dtype = getattr(flags, "dtype", None) or np.result_type(flags)
            if dtype != np.bool_:
                raise TypeError(f"{where}: {argument}.{name} must be bool; got dtype {dtype}")
    return out


def leading_size(tree, where: str, argument: str, axis: int = 0) -> int:
    """Size of axis `axis` shared by every leaf of `tree` (the batch size), with a clear error otherwise."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"{where}: {argument} must hold at least one array; got {tree!r}")
    sizes = {np.shape(x)[axis] if np.ndim(x) > axis else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        shapes = [tuple(np.shape(x)) for x in leaves]
        raise ValueError(f"{where}: every array of {argument} must share axis {axis} (the batch); got shapes "
                         f"{shapes}")
    return sizes.pop()

