"""Flax modules that hold a seqjax cell's params and call seqjax's pure functions, carry explicit.

- `RNN(cell)` (linen): `carry, ys = RNN(cell).apply(variables, carry, xs)` is `sj.scan(cell, params, carry,
  xs)` with `params = variables["params"]["cell"]` — the same pytree `cell.init` makes, so weights move
  between the module and the functional API unchanged.
- `StepCell(cell)` (linen): one step `(carry, x_t) -> (carry, y_t)` with Flax's cell interface
  (`initialize_carry`, `num_feature_axes`), so `flax.linen.RNN(StepCell(cell))` runs a seqjax cell.
- `NNXRNN(cell, in_features, rngs=...)` (NNX): the same as `RNN`, one `nnx.Param` per params leaf.

This module is `seqjax.flax`; `import flax` inside the seqjax package still imports the Flax library
(imports are absolute).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from seqjax import checks
from seqjax.cell import Cell
from seqjax.scan import scan


def _in_features(xs, where: str):
    """Features per step for `cell.init`: the last axis of float steps; None for token ids `[B, T]`."""
    if jnp.ndim(xs) < 2:
        raise ValueError(f"{where}: xs must be [batch, time, features] (or [batch, time] token ids); got shape "
                         f"{tuple(jnp.shape(xs))}")
    return int(jnp.shape(xs)[-1]) if jnp.ndim(xs) >= 3 else None


class RNN(nn.Module):
    """A seqjax cell as a Flax linen layer: `__call__(carry, xs, ...) -> (carry, ys)`, as `sj.scan`.

    Params: one entry `"cell"` holding `cell.init(key, xs.shape[-1])`. `mask`, `reset`, `reverse` as in
    `sj.scan`; dropout (`sj.lstm(..., dropout=)`) runs when `deterministic=False`, with the `"dropout"`
    rng stream. `unroll` and `masked_output` are `sj.scan`'s options.
    """

    cell: Cell
    unroll: int = 1
    masked_output: str | None = None

    @nn.compact
    def __call__(self, carry, xs, *, mask=None, reset=None, reverse: bool = False, deterministic: bool = True):
        checks.check_cell(self.cell, "seqjax.flax.RNN", "cell")
        in_features = _in_features(xs, "seqjax.flax.RNN")
        params = self.param("cell", lambda key: self.cell.init(key, in_features))
        key = None if deterministic else self.make_rng("dropout")
        return scan(self.cell, params, carry, xs, mask=mask, reset=reset, reverse=reverse, unroll=self.unroll,
                    key=key, masked_output=self.masked_output)

    @nn.nowrap
    def initial_carry(self, batch_size: int, dtype=jnp.float32):
        """The cell's zero carry for `batch_size` samples (no key, no params)."""
        return self.cell.initial_carry(batch_size, dtype)


class StepCell(nn.RNNCellBase):
    """One step of a seqjax cell with Flax's cell interface: `(carry, x_t [B, F]) -> (carry, y_t)`.

    For `flax.linen.RNN(StepCell(cell))`; the carry is the seqjax carry (e.g. `LSTMCarry(h, c)`). Params:
    `"cell"`, as in `RNN`. No dropout (use `RNN` for it).
    """

    cell: Cell

    @nn.compact
    def __call__(self, carry, x_t):
        checks.check_cell(self.cell, "seqjax.flax.StepCell", "cell")
        in_features = int(jnp.shape(x_t)[-1]) if jnp.ndim(x_t) >= 2 else None
        params = self.param("cell", lambda key: self.cell.init(key, in_features))
        return self.cell.step(params, carry, x_t)

    @nn.nowrap
    def initialize_carry(self, rng, input_shape: tuple[int, ...]):
        """The zero carry for `input_shape = (batch, features)`; `rng` is unused (zeros need no key)."""
        del rng
        return self.cell.initial_carry(int(input_shape[0]))

    @property
    def num_feature_axes(self) -> int:
        return 1


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


class NNXRNN(nnx.Module):
    """A seqjax cell as a Flax NNX module: `__call__(carry, xs, ...) -> (carry, ys)`, as `sj.scan`.

    `NNXRNN(cell, in_features, rngs=nnx.Rngs(0))` draws `cell.init` with `rngs.params()` and keeps each
    params leaf as an `nnx.Param` in the params' own structure; `cell_params()` gives the plain pytree
    `sj.scan` takes. Pass `key=` for dropout, as to `sj.scan`.
    """

    def __init__(self, cell: Cell, in_features, *, rngs: nnx.Rngs, unroll: int = 1,
                 masked_output: str | None = None):
        checks.check_cell(cell, "seqjax.flax.NNXRNN", "cell")
        self.cell = cell
        self.unroll = unroll
        self.masked_output = masked_output
        self.params = nnx.data(jax.tree.map(nnx.Param, cell.init(rngs.params(), in_features)))

    def cell_params(self) -> Any:
        """The params as the plain pytree `cell.init` makes (what `sj.scan(cell, params, ...)` takes)."""
        return jax.tree.map(lambda v: v[...], self.params, is_leaf=_is_variable)

    def initial_carry(self, batch_size: int, dtype=jnp.float32):
        return self.cell.initial_carry(batch_size, dtype)

    def __call__(self, carry, xs, *, mask=None, reset=None, reverse: bool = False, key=None):
        return scan(self.cell, self.cell_params(), carry, xs, mask=mask, reset=reset, reverse=reverse,
                    unroll=self.unroll, key=key, masked_output=self.masked_output)
