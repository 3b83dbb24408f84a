"""The loop engine of the recurrent fast paths: forward loop, hand-written backward pass, chunking.

A cell gives its maths as a `Gated` (one step forward, one step backward); the engine runs it over time:

- forward: one `lax.scan`; the input projection `x_t w_x + b_x` is formed in the loop (for every step at
  once when the plan hoists it), plus `h w_h` for cells whose gates add the two.
- backward (custom VJP): a reverse loop that only propagates the carry's gradient and keeps the
  pre-activation gradients `dz`; the weight gradients are matmuls over many rows at once
  (`w_h`: `h_prev^T dz`, `w_x`: `x^T dz`), not one small matmul per step.
- chunks: the backward pass walks chunks of `plan.chunk` steps from the last, each adding its weight
  gradients (so `dz` is kept for one chunk only). With `plan.recompute` the forward pass keeps only the
  carry at each chunk's start (its `h` is the output before the chunk, kept anyway) and the backward
  pass recomputes one chunk's forward at a time: memory then grows with `T / chunk` carries instead of
  `T` steps of gate activations; chunks of one step run each step's forward again right before its
  backward. On XLA:CPU fresh memory is expensive (each call allocates its temporaries anew; past 32 MB
  that means page faults every call), so the plan keeps the residuals only while they are small.
- heads: a `chain`'s stateless parts after the layer (`Head`) run inside the forward loop when the layer is
  evaluated without a gradient, so only their outputs are written.

What a step keeps is a tuple of `[T, B, H]` arrays, one per entry, each read back with its own dynamic
slice: XLA:CPU compiles a loop fusion that slices blocks out of a dynamically indexed array to slow
scalar code (measured 2.5x slower), and separate arrays measured faster than one packed `[T, n, B, H]`
array (BENCHMARKS.md, "attempts").
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from seqjax.cell import matmul as cell_matmul
from seqjax.fast.plan import Plan


class Weights(NamedTuple):
    """`w_x [F, nH]`, `w_h [H, nH]`, input bias `b_x [nH]`, recurrent bias `b_h [nH]` (None: one bias)."""

    w_x: jax.Array
    w_h: jax.Array
    b_x: jax.Array
    b_h: Optional[jax.Array]


class Gated(NamedTuple):
    """One cell's maths. The carry is a tuple of `[B, H]` arrays whose first entry `h` is also the output.

    - `name`: "lstm", "gru" or "simple_rnn" (for `plan_for`).
    - `additive`: the gates take `x w_x + h w_h + b_x` (LSTM, SimpleRNN), so the engine forms that sum
      (with one matmul over `[x, h]` when the plan fuses them); otherwise (GRU) the cell's step does its
      own `h w_h`.
    - `kept`: how many `[B, H]` arrays per step the backward pass keeps (new carry and residuals).
    - `step(w, carry, zp_t, keep) -> (new_carry, residual)`: `zp_t` is the tuple of gate blocks (`[B, H]`
      each) of `x_t w_x + b_x`, plus `h w_h` when `additive`; `residual` is the tuple of `[B, H]` arrays
      `backward` needs besides the previous and new carries (None unless `keep`).
    - `backward(w, carry_prev, carry_new, residual, d_carry) -> (dh_direct, d_rest, dzx, dzh)`: from the
      gradient of the new carry (output gradient included), the gradient reaching the previous carry other
      than through `h w_h` (`dh_direct`, or None; `d_rest` for the carry's other entries), and the
      gradients of the input projection `dzx` and of the recurrent projection `dzh` (the same object when
      they coincide), each one `[B, nH]` array or the tuple of its `[B, H]` gate blocks (then the engine
      multiplies block by block: a fusion that concatenates blocks computed from dynamically indexed
      arrays is slow scalar code on XLA:CPU).
    """

    name: str
    additive: bool
    kept: int
    step: Callable
    backward: Callable


class Head(NamedTuple):
    """Stateless per-step layers after the recurrent one (a `chain`'s dense / activation parts), run by the
    engine so that inference writes only their small outputs: `step(params, h_t [B, H]) -> y_t` inside
    the forward loop, `sequence(params, hs_TB) -> ys_TB` over all steps at once (the backward pass).
    `affine(params) -> (w, b or None)` where the head is one linear `dense` (a native kernel may run it)."""

    step: Callable
    sequence: Callable
    affine: Optional[Callable] = None


def matmul(a, w):
    """`a @ w` in the weights' dtype: a plain matmul, or mixed precision when the weights come rounded to
    bfloat16 (a cell's `matmul_dtype`; `seqjax.cell.matmul`)."""
    return cell_matmul(a, w, w.dtype)


def _gate_blocks(xp, blocks: int):
    """The gate blocks of a projection as separate `[B, H]` arrays."""
    hidden = xp.shape[-1] // blocks
    return tuple(xp[..., k * hidden:(k + 1) * hidden] for k in range(blocks))


class Derived(NamedTuple):
    """The weights in the forms the loops use, formed once before any loop: XLA:CPU does not move them
    out of a loop (a `w_h^T` formed in the chunk loop cost 5 ms of copies per large train step).

    `w_xh [F + H, nH]`: `[w_x; w_h]` (None unless the plan fuses the two matmuls of an additive cell);
    `w_h_t [nH, H]`: `w_h^T`, and `w_h_t_blocks`, its `[H, H]` gate blocks (for cells whose backward
    gives the recurrent gradient block by block): only for the backward pass (else None and `()`).
    """

    w_xh: Optional[jax.Array]
    w_h_t: Optional[jax.Array]
    w_h_t_blocks: tuple


def _derive(maths: Gated, w: Weights, plan: Plan, backward: bool = False) -> Derived:
    fused = maths.additive and plan.fuse_xh and not plan.hoist
    w_xh = jnp.concatenate([w.w_x, w.w_h], axis=0) if fused else None
    if not backward:
        return Derived(w_xh, None, ())
    blocks = w.w_h.shape[1] // w.w_h.shape[0]
    return Derived(w_xh, w.w_h.T, tuple(wk.T for wk in _gate_blocks(w.w_h, blocks)))


def _projector(maths: Gated, w: Weights, d: Derived, plan: Plan):
    """`(prepare, project)`: `prepare(xs_TB)` is what the loop scans over, `project(input_t, h)` the step's
    gate blocks. Hoisted, the input projection of every step is one matmul before the loop, split into
    per-gate `[T, B, H]` arrays; otherwise the loop projects `x_t` itself."""
    blocks = w.w_h.shape[1] // w.w_h.shape[0]

    if plan.hoist:
        def project(xp_t, h):
            if not maths.additive:
                return xp_t
            return tuple(a + b for a, b in zip(xp_t, _gate_blocks(matmul(h, w.w_h), blocks)))

        return lambda xs_TB: _gate_blocks(matmul(xs_TB, w.w_x) + w.b_x, blocks), project
    if d.w_xh is not None:
        def project(x_t, h):
            return _gate_blocks(matmul(jnp.concatenate([x_t, h], axis=-1), d.w_xh) + w.b_x, blocks)
    elif maths.additive:
        def project(x_t, h):
            return _gate_blocks(matmul(x_t, w.w_x) + matmul(h, w.w_h) + w.b_x, blocks)  # the step's order
    else:
        def project(x_t, h):
            return _gate_blocks(matmul(x_t, w.w_x) + w.b_x, blocks)
    return lambda xs_TB: xs_TB, project


def _forward(maths: Gated, w: Weights, d: Derived, carry, xs_TB, plan: Plan, keep: bool, out=None):
    """`(carry, ys_TB, kept)`: `kept` is the tuple of `[T, B, H]` arrays of each step's new carry but `h`
    (which is `ys`), then its residuals; None unless `keep` (or when there is nothing to keep).
    `out(h_t) -> y_t`: what is written as the step's output instead of `h_t` (a head; not with `keep`)."""
    prepare, project = _projector(maths, w, d, plan)
    out = out or (lambda h: h)

    def body(carry, x_t):
        new_carry, res = maths.step(w, carry, project(x_t, carry[0]), keep)
        entries = tuple(new_carry[1:]) + (tuple(res) if keep else ())
        return new_carry, (out(new_carry[0]), entries if keep and entries else None)

    carry, (ys, kept) = lax.scan(body, carry, prepare(xs_TB), unroll=plan.unroll)
    return carry, ys, kept


def _forward_batch_major(maths: Gated, w: Weights, d: Derived, carry, xs_TB, plan: Plan, out=None):
    """`(carry, ys_TB)` with the outputs written into a `[B, T, H]` buffer in the loop: `ys_TB` is its
    transpose, which `scan`'s transpose back to `[B, T, H]` cancels (no copy of the whole output).
    `out(h_t) -> y_t`: what is written instead of `h_t` (a head: then the buffer is `[B, T, out]`)."""
    prepare, project = _projector(maths, w, d, plan)
    out = out or (lambda h: h)
    time, batch = xs_TB.shape[:2]
    y = jax.eval_shape(out, carry[0])
    ys = jnp.zeros((batch, time) + y.shape[1:], y.dtype)

    def body(state, x_t):
        carry, ys, t = state
        carry, _ = maths.step(w, carry, project(x_t, carry[0]), False)
        return (carry, lax.dynamic_update_slice_in_dim(ys, out(carry[0])[:, None], t, axis=1), t + 1), None

    (carry, ys, _), _ = lax.scan(body, (carry, ys, jnp.int32(0)), prepare(xs_TB), unroll=plan.unroll)
    return carry, jnp.swapaxes(ys, 0, 1)


def _backward(maths: Gated, w: Weights, d: Derived, start, d_carry, dys_TB, ys_TB, kept, plan: Plan):
    """Reverse loop over one stretch that began from carry `start`: `(d_carry_at_start, dzx_TB, dzh_TB)`."""
    n_rest = len(start) - 1
    time = ys_TB.shape[0]

    def entry(a, t):
        """`a[t]`, one dynamic slice."""
        return lax.dynamic_index_in_dim(a, t, keepdims=False)

    def carry_at(t):
        return (entry(ys_TB, t),) + tuple(entry(kept[k], t) for k in range(n_rest))

    def recurrent_grad(dzh):
        """`dzh @ w_h^T`: one matmul, or one per gate block when the cell gives the blocks apart."""
        if isinstance(dzh, tuple):
            return sum(matmul(dz_k, wk_t) for dz_k, wk_t in zip(dzh, d.w_h_t_blocks))
        return matmul(dzh, d.w_h_t)

    def body(state, _):
        d_carry, t = state
        first = t == 0  # the step began from `start`
        prev = tuple(jnp.where(first, s, c) for s, c in zip(start, carry_at(jnp.maximum(t - 1, 0))))
        res = tuple(entry(kept[k], t) for k in range(n_rest, maths.kept - 1))
        d_carry = (d_carry[0] + entry(dys_TB, t),) + tuple(d_carry[1:])
        dh_direct, d_rest, dzx, dzh = maths.backward(w, prev, carry_at(t), res, d_carry)
        dh = recurrent_grad(dzh) if dh_direct is None else dh_direct + recurrent_grad(dzh)
        return ((dh,) + tuple(d_rest), t - 1), (dzx, None if dzh is dzx else dzh)

    (d_carry, _), (dzx, dzh) = lax.scan(body, (d_carry, jnp.int32(time - 1)), None, length=time,
                                        reverse=True, unroll=plan.unroll)
    dzx = jnp.concatenate(dzx, axis=-1) if isinstance(dzx, tuple) else dzx
    dzh = dzx if dzh is None else jnp.concatenate(dzh, axis=-1) if isinstance(dzh, tuple) else dzh
    return d_carry, dzx, dzh


def _grads(w: Weights, xs_TB, h_prev_TB, dzx_TB, dzh_TB):
    """Weight gradients of one stretch as matmuls over all its `steps * B` rows, and `dxs`. With bfloat16
    weights (mixed precision) the matmuls' operands are rounded to bfloat16 and the gradients stay in the
    activations' dtype, to be summed over chunks there (`_like_weights` rounds the total)."""
    rows = xs_TB.shape[0] * xs_TB.shape[1]
    dzx = dzx_TB.reshape(rows, -1)
    dzh = dzh_TB.reshape(rows, -1)

    def outer(a, dz, like):  # a^T dz, the operands rounded to the weights' dtype
        return cell_matmul(a.reshape(rows, -1).T, dz, like.dtype)

    g = Weights(outer(xs_TB, dzx, w.w_x), outer(h_prev_TB, dzh, w.w_h), jnp.sum(dzx, axis=0),
                None if w.b_h is None else jnp.sum(dzh, axis=0))
    return g, matmul(dzx_TB, w.w_x.T)


def _like_weights(g: Weights, w: Weights) -> Weights:
    """The weight gradients `g` in the dtypes of the weights `w` (a custom VJP's cotangents must match)."""
    return jax.tree.map(lambda a, b: a.astype(b.dtype), g, w)


def chunk_length(time: int, target: int) -> int:
    """A chunk length near `target` that divides `time` when one is close (no ragged last chunk)."""
    if target <= 0 or target >= time:
        return time
    for k in range(target, max(1, target // 2) - 1, -1):
        if time % k == 0:
            return k
    return target


def _split(a, n: int, k: int):
    """The first `n * k` steps of `a [T, ...]` as `[n, k, ...]`, or `[n, ...]` when chunks are one step:
    XLA:CPU copies a `[T, 1, ...]` reshape of a computed array (a layout change), 26 MB at large sizes."""
    return a[:n] if k == 1 else a[:n * k].reshape((n, k) + a.shape[1:])


def _merge(a, n: int, k: int):
    """The inverse of `_split`: `[n, k, ...]` (or `[n, ...]`) as `[n * k, ...]`."""
    return a if k == 1 else a.reshape((n * k,) + a.shape[2:])


def _chunk(a, k: int):
    """One chunk of a `_split` array as `[k, ...]` (inside a loop over chunks)."""
    return None if a is None else a[None] if k == 1 else a


def _unchunk(a, k: int):
    """The inverse of `_chunk`, for a chunk loop's outputs."""
    return a[0] if k == 1 else a


def sequence(maths: Gated, plan: Plan, head: Optional[Head] = None):
    """`(w, carry, xs_TB) -> (carry, ys_TB)`: the loop, with this module's backward pass if `plan` says.

    Saved for the backward pass: the outputs, and every step's other carry entries and residuals
    (`plan.recompute` False), or the other carry entries at the start of each chunk only (`plan.recompute`
    True; each chunk's forward runs again; a chunk's starting `h` is the output before it). The backward
    pass walks the chunks from the last; each adds its weight gradients.

    With a `head`: `(w, head_params, carry, xs_TB) -> (carry, head outputs)`. Evaluated (no gradient) the
    head runs on each step's `h` inside the loop, so the `[T, B, H]` outputs are never written; the
    backward pass keeps the outputs as without a head and runs the head over all steps at once.
    """

    def run(w, carry, xs_TB, out=None):
        d = _derive(maths, w, plan)
        if plan.batch_major:
            return _forward_batch_major(maths, w, d, carry, xs_TB, plan, out)
        carry, ys, _ = _forward(maths, w, d, carry, xs_TB, plan, keep=False, out=out)
        return carry, ys

    def primal(w, carry, xs_TB):
        return run(w, carry, xs_TB)

    def primal_head(w, head_params, carry, xs_TB):
        return run(w, carry, xs_TB, lambda h: head.step(head_params, h))

    if not plan.custom_vjp:
        return primal if head is None else primal_head

    def fwd(w, carry, xs_TB):
        time = xs_TB.shape[0]
        k = chunk_length(time, plan.chunk)
        n = time // k
        d = _derive(maths, w, plan)
        if not plan.recompute:
            new_carry, ys, kept = _forward(maths, w, d, carry, xs_TB, plan, keep=True)
            return (new_carry, ys), (w, xs_TB, carry, ys, () if kept is None else kept, None)

        def chunk(carry, xs_c):
            new_carry, ys_c, _ = _forward(maths, w, d, carry, _chunk(xs_c, k), plan, keep=False)
            return new_carry, (_unchunk(ys_c, k), tuple(carry[1:]))

        new_carry, (ys, starts) = lax.scan(chunk, carry, _split(xs_TB, n, k))
        ys = _merge(ys, n, k)
        last_start = None
        if n * k < time:  # a ragged last chunk starts where the others end
            last_start = tuple(new_carry[1:])
            new_carry, ys_rest, _ = _forward(maths, w, d, new_carry, xs_TB[n * k:], plan, keep=False)
            ys = jnp.concatenate([ys, ys_rest], axis=0)
        return (new_carry, ys), (w, xs_TB, carry, ys, None, (starts, last_start))

    def chunk_grads(w, d, start, xs_c, dys_c, d_carry, ys_c=None, kept_c=None):
        """One stretch's backward from the gradient at its end: `(d_carry_at_start, grads, dxs)`."""
        if ys_c is None:  # recompute the stretch's forward, keeping its residuals
            _, ys_c, kept_c = _forward(maths, w, d, start, xs_c, plan, keep=True)
        d_carry, dzx, dzh = _backward(maths, w, d, start, d_carry, dys_c, ys_c, kept_c, plan)
        h_prev = jnp.concatenate([start[0][None], ys_c[:-1]], axis=0)
        g, dxs = _grads(w, xs_c, h_prev, dzx, dzh)
        return d_carry, g, dxs

    def bwd(saved, cotangents):
        w, xs_TB, carry0, ys, kept, starts = saved
        recomputed = starts is not None  # else every step's residuals were kept (`kept`, maybe empty)
        d_carry, dys = cotangents
        time = xs_TB.shape[0]
        k = chunk_length(time, plan.chunk)
        n = time // k
        n_rest = len(carry0) - 1
        d = _derive(maths, w, plan, backward=True)
        if not recomputed and k == time:
            d_carry, g, dxs = chunk_grads(w, d, carry0, xs_TB, dys, d_carry, ys, kept)
            return _like_weights(g, w), d_carry, dxs
        # each chunk's starting carry: `h` is the output before it, the other entries were kept (every
        # step's, or each chunk's start when recomputing); strided slices, so only `n` rows are copied
        # (`h` of one-step chunks below)
        if recomputed:
            rest_head, rest_last = starts
        else:
            rest_head = tuple(jnp.concatenate([c[None], kept[j][k - 1:n * k - 1:k]], axis=0)
                              for j, c in enumerate(carry0[1:]))
            rest_last = tuple(kept[j][n * k - 1] for j in range(n_rest))
        last_start = (ys[n * k - 1],) + tuple(rest_last) if n * k < time else None
        # one-step chunks: that slice would copy every output, so the loop reads the output before step j
        h_heads = jnp.concatenate([carry0[0][None], ys[k - 1:n * k - 1:k]], axis=0) if k > 1 else jnp.arange(n)

        def h_start(entry):
            """A chunk's starting `h` from its entry of `h_heads`."""
            if k > 1:
                return entry
            before = lax.dynamic_index_in_dim(ys, jnp.maximum(entry - 1, 0), keepdims=False)
            return jnp.where(entry == 0, carry0[0], before)

        g = jax.tree.map(lambda a: jnp.zeros(a.shape, xs_TB.dtype), w)  # summed in the activations' dtype
        dxs_rest = None
        if n * k < time:
            rest = (ys[n * k:], tuple(a[n * k:] for a in kept)) if not recomputed else (None, None)
            d_carry, g, dxs_rest = chunk_grads(w, d, last_start, xs_TB[n * k:], dys[n * k:], d_carry, *rest)

        def body(state, inputs):
            d_carry, g = state
            h_entry, rest, xs_c, dys_c, ys_c, kept_c = inputs
            start = (h_start(h_entry),) + tuple(rest)
            kept_c = None if kept_c is None else tuple(_chunk(a, k) for a in kept_c)
            d_carry, g_c, dxs_c = chunk_grads(w, d, start, _chunk(xs_c, k), _chunk(dys_c, k), d_carry,
                                              _chunk(ys_c, k), kept_c)
            return (d_carry, jax.tree.map(jnp.add, g, g_c)), _unchunk(dxs_c, k)

        kept_n = (_split(ys, n, k), tuple(_split(a, n, k) for a in kept)) if not recomputed else (None, None)
        inputs = (h_heads, tuple(rest_head), _split(xs_TB, n, k), _split(dys, n, k)) + kept_n
        (d_carry, g), dxs = lax.scan(body, (d_carry, g), inputs, reverse=True)
        dxs = _merge(dxs, n, k)
        if dxs_rest is not None:
            dxs = jnp.concatenate([dxs, dxs_rest], axis=0)
        return _like_weights(g, w), d_carry, dxs

    if head is None:
        fn = jax.custom_vjp(primal)
        fn.defvjp(fwd, bwd)
        return fn

    def fwd_head(w, head_params, carry, xs_TB):
        (new_carry, ys), saved = fwd(w, carry, xs_TB)
        return (new_carry, head.sequence(head_params, ys)), (saved, head_params)

    def bwd_head(saved_head, cotangents):
        saved, head_params = saved_head
        _, _, _, ys, _, _ = saved  # `fwd`'s residuals; the layer's outputs are what the head took
        d_carry, d_out = cotangents
        _, head_vjp = jax.vjp(head.sequence, head_params, ys)
        d_head, dys = head_vjp(d_out)
        g, d_carry, dxs = bwd(saved, (d_carry, dys))
        return g, d_head, d_carry, dxs

    fn = jax.custom_vjp(primal_head)
    fn.defvjp(fwd_head, bwd_head)
    return fn
