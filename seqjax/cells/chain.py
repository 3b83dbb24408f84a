"""`chain(*cells)`: stacked layers and heads as one cell.

Params are the tuple of the parts' params and the carry the tuple of the parts' carries (stateless parts
contribute `()`). `step` goes through the stack one time step at a time (the path `rollout` uses);
`sequence` runs each layer over the whole sequence before the next, which gives the same numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seqjax.cell import Cell, CellConfig, InputSpec, compiled_init
from seqjax.loop import run_sequence


def _output_spec(cell: Cell, params, spec: InputSpec) -> InputSpec:
    """What `cell` outputs per step for a batch of one, as the next part's input spec.

    Found by tracing its sequence function over one step, so sequence-only cells (bidirectional) work too.
    """
    shape = tuple(1 if d is None else d for d in spec.shape)
    xs = jax.ShapeDtypeStruct((1, 1) + shape, jnp.int32 if spec.integer else jnp.float32)
    carry = jax.eval_shape(lambda: cell.initial_carry(1))
    _, ys = jax.eval_shape(lambda p, c, x: run_sequence(cell, p, c, x), params, carry, xs)
    return InputSpec(tuple(ys.shape[2:]), jnp.issubdtype(ys.dtype, jnp.integer))


def chain(*cells: Cell) -> Cell:
    """Stack `cells` so each one's output is the next one's input; the result is a cell too.

    `sj.chain(sj.lstm(64), sj.lstm(64), sj.dense(2))` is two stacked LSTMs with a per-step head.
    """
    if not cells:
        raise ValueError("sj.chain: needs at least one cell; got none")
    for i, cell in enumerate(cells):
        if not isinstance(cell, Cell):
            raise TypeError(f"sj.chain: argument {i} must be a seqjax Cell (sj.lstm(...), sj.dense(...)); "
                            f"got {type(cell).__name__}")
    n = len(cells)

    def init(key, in_features):
        keys = jax.random.split(key, n)
        params = []
        for i, (cell, k) in enumerate(zip(cells, keys)):
            p = cell.init(k, in_features)
            params.append(p)
            if i + 1 < n:
                in_features = _output_spec(cell, p, cell.input_spec(p)).shape[-1]
        return tuple(params)

    def initial_carry(batch_size, dtype=jnp.float32):
        return tuple(cell.initial_carry(batch_size, dtype) for cell in cells)

    def _check_params(params):
        if not isinstance(params, (tuple, list)) or len(params) != n:
            got = f"a {type(params).__name__} of {len(params)}" if isinstance(params, (tuple, list)) \
                else type(params).__name__
            raise ValueError(f"sj.chain: params must be a tuple of {n} parts' params (one per cell); got {got}")

    def input_spec(params):
        _check_params(params)
        first = spec = cells[0].input_spec(params[0])
        for i in range(1, n):
            out = _output_spec(cells[i - 1], params[i - 1], spec)
            spec = cells[i].input_spec(params[i])
            if len(spec.shape) != len(out.shape) or any(
                    want is not None and want != got for want, got in zip(spec.shape, out.shape)):
                raise ValueError(
                    f"sj.chain: part {i} ({cells[i].name}) takes steps of shape {spec.shape} but part {i - 1} "
                    f"({cells[i - 1].name}) outputs {out.shape}")
            spec = out if any(d is None for d in spec.shape) else spec
        return first

    def sample_noise(key, params, batch_size, dtype=jnp.float32):
        keys = jax.random.split(key, n)
        return tuple(cell.sample_noise(k, p, batch_size, dtype) for cell, k, p in zip(cells, keys, params))

    def step(params, carry, x_t, noise=None):
        noise = noise if noise is not None else (None,) * n
        new_carry = []
        for cell, p, c, e in zip(cells, params, carry, noise):
            c, x_t = cell.step(p, c, x_t, e)
            new_carry.append(c)
        return tuple(new_carry), x_t

    def sequence(params, carry, xs_TB, *, mask_TB=None, reset_TB=None, noise=None, unroll=1,
                 masked_output="previous"):
        noise = noise if noise is not None else (None,) * n
        new_carry = []
        for cell, p, c, e in zip(cells, params, carry, noise):
            c, xs_TB = run_sequence(cell, p, c, xs_TB, mask_TB=mask_TB, reset_TB=reset_TB, noise=e,
                                    unroll=unroll, masked_output=masked_output)
            new_carry.append(c)
        return tuple(new_carry), xs_TB

    return Cell(init=compiled_init(init), initial_carry=initial_carry, step=step, input_spec=input_spec,
                sample_noise=sample_noise, sequence=sequence, name="chain", config=CellConfig(parts=tuple(cells)))
