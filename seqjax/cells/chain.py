"""`chain(*cells)`: stacked layers and heads as one cell.

Params are the tuple of the parts' params and the carry the tuple of the parts' carries (stateless parts
contribute `()`). `step` goes through the stack one time step at a time (the path `rollout` uses);
`sequence` runs each layer over the whole sequence before the next, which gives the same numbers. The
stateless per-step parts (dense, activation) right after a recurrent layer with a fast path are handed
to that layer as its head: evaluated without a gradient they run inside its loop, so a `chain(lstm(H),
dense(F))` writes `[T, B, F]` outputs and not also `[T, B, H]` (1.4-1.7x faster inference at the large
and many-streams sizes of `benchmarks`); with a gradient the work is that of layer by layer. Not with
`mask` or `reset` (layer by layer then).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seqjax.cell import Cell, CellConfig, InputSpec, compiled_init
from seqjax.fast._common import stack_closed_loop
from seqjax.fast.engine import Head
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


def _head(parts: tuple) -> Head:
    """The stateless `parts` as one head: a chain of them, per step and over a whole `[T, B, ...]` sequence."""
    stack, carry = chain(*parts), ((),) * len(parts)
    affine = getattr(parts[0].sequence, "affine", None) if len(parts) == 1 else None
    return Head(step=lambda params, y_t: stack.step(params, carry, y_t)[1],
                sequence=lambda params, ys_TB: stack.sequence(params, carry, ys_TB)[1],
                affine=None if affine is None else lambda params: affine(params[0]))


def _heads(cells: tuple) -> dict:
    """`{i: (stop, head)}` for each part `i` whose sequence takes a head and is followed by pointwise
    stateless parts `i + 1 .. stop - 1`."""
    heads = {}
    for i, cell in enumerate(cells):
        stop = i + 1
        while stop < len(cells) and getattr(cells[stop].sequence, "pointwise", False):
            stop += 1
        if stop > i + 1 and getattr(cell.sequence, "takes_head", False):
            heads[i] = (stop, _head(cells[i + 1:stop]))
    return heads


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
    heads = _heads(cells)

    def init(key, in_features):
        keys = jax.random.split(key, n)
        params = []
        for i, (cell, k) in enumerate(zip(cells, keys)):
            p = cell.init(k, in_features)
            params.append(p)
            if i + 1 < n:
                spec = cell.input_spec(p)
                if spec.shape and spec.shape[-1] is None:  # a size-agnostic part (activation) passes it on
                    spec = spec._replace(shape=spec.shape[:-1] + (in_features,))
                in_features = _output_spec(cell, p, spec).shape[-1]
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
        i = 0
        while i < n:
            stop, head = heads.get(i, (i + 1, None))
            if head is not None and mask_TB is None and reset_TB is None:
                c, xs_TB = cells[i].sequence(params[i], carry[i], xs_TB, noise=noise[i], unroll=unroll,
                                             head=head, head_params=tuple(params[i + 1:stop]))
                new_carry += [c] + list(carry[i + 1:stop])
            else:
                stop = i + 1
                c, xs_TB = run_sequence(cells[i], params[i], carry[i], xs_TB, mask_TB=mask_TB, reset_TB=reset_TB,
                                        noise=noise[i], unroll=unroll, masked_output=masked_output)
                new_carry.append(c)
            i = stop
        return tuple(new_carry), xs_TB

    layer_loop = getattr(cells[0].sequence, "closed_loop", None)
    affine = getattr(cells[-1].sequence, "affine", None)
    if n == 2 and layer_loop is not None and affine is not None:
        def closed_loop(params, carry, x0, steps: int):
            """`(carry, ys [B, steps, F])` of `steps` steps fed back unchanged from `x0`, on the layer's
            closed-loop kernel with the dense head inside; None where the layer says it does not apply."""
            w_d, b_d = affine(params[1])
            out = layer_loop(params[0], carry[0], x0, steps, w_d, b_d)
            return None if out is None else ((out[0], carry[1]), out[1])

        step.closed_loop = closed_loop  # `sj.rollout`'s fast path (identity feedback)

    native_layers = [getattr(cell.sequence, "native_layer", None) for cell in cells[:-1]]
    if n > 2 and affine is not None and all(native_layers):
        def closed_loop(params, carry, x0, steps: int):
            """`(carry, ys [B, steps, F])` of `steps` steps fed back unchanged from `x0`, the stacked layers and
            the dense head in one native kernel call (`seqjax.fast._common.stack_closed_loop`); None where it does
            not apply to one of the layers."""
            w_d, b_d = affine(params[-1])
            out = stack_closed_loop(native_layers, params[:-1], carry[:-1], x0, steps, w_d, b_d)
            return None if out is None else (out[0] + (carry[-1],), out[1])

        step.closed_loop = closed_loop

    return Cell(init=compiled_init(init), initial_carry=initial_carry, step=step, input_spec=input_spec,
                sample_noise=sample_noise, sequence=sequence, name="chain", config=CellConfig(parts=tuple(cells)))
