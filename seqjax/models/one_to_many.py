"""One-to-many: one vector `x [B, F]` in, a sequence `[B, steps, out]` out, from a fresh state.

The first seed's two ways: repeat the vector at every step (Keras's `RepeatVector` before an LSTM),
or feed each output back as the next input (its `stateful=True` loop of `predict` calls, here one
compiled `sj.rollout`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp

from seqjax.cell import Cell, check_size
from seqjax.cells.chain import chain
from seqjax.cells.lstm import lstm
from seqjax.cells.stateless import dense
from seqjax.ops import repeat
from seqjax.rollout import rollout
from seqjax.scan import scan


class OneToMany(NamedTuple):
    """`cell`, `init(key) -> params`, `apply(params, x [B, F]) -> ys [B, steps, out]`."""

    cell: Cell
    init: Callable
    apply: Callable


def one_to_many_repeat(in_features: int, hidden: int, out_features: int, steps: int) -> OneToMany:
    """`repeat(x, steps)` -> `lstm(hidden)` -> per-step `dense(out_features)`, from a zero carry."""
    for name, value in (("in_features", in_features), ("steps", steps)):
        check_size(value, "sj.models.one_to_many_repeat", name)
    cell = chain(lstm(hidden), dense(out_features))

    def apply(params, x_BF):
        x_BF = jnp.asarray(x_BF)
        return scan(cell, params, cell.initial_carry(x_BF.shape[0]), repeat(x_BF, steps))[1]

    return OneToMany(cell, lambda key: cell.init(key, in_features), apply)


def one_to_many_feedback(features: int, hidden: int, steps: int) -> OneToMany:
    """`lstm(hidden)` -> `dense(features)` in closed loop: `ys[:, 0] = step(x)`, then each output is the next
    input (`sj.rollout` from a zero carry), so the output size equals the input size."""
    check_size(features, "sj.models.one_to_many_feedback", "features")
    check_size(steps, "sj.models.one_to_many_feedback", "steps")
    cell = chain(lstm(hidden), dense(features))

    def apply(params, x_BF):
        x_BF = jnp.asarray(x_BF)
        return rollout(cell, params, cell.initial_carry(x_BF.shape[0]), x_BF, steps)[1]

    return OneToMany(cell, lambda key: cell.init(key, features), apply)
