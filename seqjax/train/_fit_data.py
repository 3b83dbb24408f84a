"""What `fit` iterates: the steps of one epoch, stateless (shuffled padded batches) or stateful (chunks in order)."""

from __future__ import annotations

import math
from typing import Iterator, Optional

import jax
import numpy as np

from seqjax import data
from seqjax.train._batch import as_batch, leading_size
from seqjax.train._fit_parts import weighted_means
from seqjax.train.state import TrainBatch

WHERE = "seqjax.train.fit"


def _padded_batches(samples: TrainBatch, batch_size: int, rng) -> Iterator[tuple[TrainBatch, int]]:
    """`(batch, real_rows)` of fixed shape (padding masked), shuffled with `rng` unless it is None."""
    leaves, treedef = jax.tree.flatten(samples, is_leaf=lambda x: x is None)
    arrays = [x for x in leaves if x is not None]
    for b in data.batches(*arrays, batch_size=batch_size, shuffle=rng is not None, rng=rng, remainder="pad"):
        parts = iter(b.arrays)
        batch = jax.tree.unflatten(treedef, [None if x is None else next(parts) for x in leaves])
        row = b.mask
        mask = row if batch.mask is None else batch.mask & row.reshape(row.shape + (1,) * (batch.mask.ndim - 1))
        yield batch._replace(mask=mask), int(row.sum())


def _samples(x, name: str) -> TrainBatch:
    if isinstance(x, (data.StatefulPairs, data.StatefulBatches)):
        raise TypeError(f"{WHERE}: {name} must be stateless samples like train; got {type(x).__name__}")
    return as_batch(x, WHERE, name)


class StatelessData:
    """`ceil(N / batch_size)` padded batches per epoch, in the order of `default_rng([seed, epoch])`."""

    stateful = False

    def __init__(self, train, val, batch_size: int, shuffle: bool, seed: int):
        self.samples = _samples(train, "train")
        self.num_samples = leading_size(self.samples, WHERE, "train")
        self.val = None if val is None else _samples(val, "val")
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.steps = math.ceil(self.num_samples / batch_size)

    def segments(self, epoch: int, start: int, checkpoint_every: Optional[int]):
        """`(batch, steps_in_it, steps_done_after_it)` from step `start` of `epoch`."""
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        for index, (batch, _) in enumerate(_padded_batches(self.samples, self.batch_size, rng)):
            if index >= start:
                yield batch, 1, index + 1

    def validate(self, evaluate, params) -> dict:
        results, weights = [], []
        for batch, real in _padded_batches(self.val, self.batch_size, None):
            results.append(evaluate(params, batch))
            weights.append(real)
        return weighted_means(results, weights)


class StatefulData:
    """The aligned chunks of a `StatefulPairs` in order: one call per epoch, or per `checkpoint_every` chunks."""

    stateful = True

    def __init__(self, train, val, checkpoint_every: Optional[int]):
        self.chunks = as_batch(train, WHERE, "train")
        if checkpoint_every is None:  # whole epochs: move the chunks to the device once
            self.chunks = jax.device_put(self.chunks)
        self.steps = leading_size(self.chunks.inputs, WHERE, "train.xs")
        self.batch = leading_size(self.chunks.inputs, WHERE, "train.xs", axis=1)
        self.num_samples = self.steps
        if val is not None and not isinstance(val, data.StatefulPairs):
            raise TypeError(f"{WHERE}: val must be a seqjax.data.StatefulPairs like train; got {type(val).__name__}")
        self.val = None if val is None else jax.device_put(as_batch(val, WHERE, "val"))

    def segments(self, epoch: int, start: int, checkpoint_every: Optional[int]):
        """`(chunks, steps_in_them, steps_done_after_them)` from chunk `start`; host slices when segmenting
        (slicing device arrays would compile one program per slice)."""
        del epoch
        size = checkpoint_every or self.steps
        for lo in range(start, self.steps, size):
            hi = min(lo + size, self.steps)
            chunks = self.chunks if (lo, hi) == (0, self.steps) else jax.tree.map(lambda x: x[lo:hi], self.chunks)
            yield chunks, hi - lo, hi

    def validate(self, evaluate, params) -> dict:
        num_chunks = leading_size(self.val.inputs, WHERE, "val.xs")
        _, metrics = evaluate(params, self.val)
        if self.val.mask is None:
            weights = np.ones(num_chunks)
        else:
            weights = np.asarray(self.val.mask).reshape(num_chunks, -1).sum(axis=1)
        return weighted_means([metrics], weights)
