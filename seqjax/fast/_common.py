"""What the recurrent fast paths share: the hand-over to the reference loop, and gate blocks."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from seqjax.cell import Cell, no_noise
from seqjax.fast import engine, native
from seqjax.fast.plan import plan_for, stack_closed_loop_threads
from seqjax.loop import scan_steps


def blocks(a, hidden, count):
    """The `count` gate blocks of width `hidden` along the last axis."""
    return tuple(a[..., k * hidden:(k + 1) * hidden] for k in range(count))


def reference_loop(step, initial_carry):
    """`scan_steps` over `step`: the loop a fast path hands over to for what it does not implement."""
    stepper = Cell(init=None, initial_carry=initial_carry, step=step, input_spec=None, sample_noise=no_noise,
                   name="reference")
    return functools.partial(scan_steps, stepper)


def _zero_feature(a, axis: int):
    """`a` with one zero entry appended along `axis`."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, 1)
    return jnp.pad(a, pad)


def with_empty_feature(params: dict, w_x: str, xs_TB, noise):
    """`(params, xs_TB, noise)` with a second, empty input feature when there is one (`params[w_x]` of one
    row), else unchanged.

    With one input feature XLA rewrites `x_t @ w_x` as a broadcast multiply, which XLA:CPU fuses with a
    step's gate slices into slow code inside a loop (a GRU forward 2.2-2.8x slower than with two features,
    LSTM's reference loop 2x); with the empty feature it stays a matmul, with the same numbers. Gradients
    reach the given `xs_TB` and `w_x` through the padding.
    """
    if jnp.shape(params[w_x])[0] != 1:
        return params, xs_TB, noise
    if noise is not None and "x" in noise:
        noise = {**noise, "x": _zero_feature(noise["x"], -1)}
    return {**params, w_x: _zero_feature(params[w_x], 0)}, _zero_feature(xs_TB, -1), noise


@functools.lru_cache(maxsize=None)
def _loop(maths: engine.Gated, plan, head=None):
    return engine.sequence(maths, plan, head)


def _time_major(ys, batch_major: bool):
    """The kernels' outputs as `[T, B, ..]`: their transpose when written `[B, T, ..]` (which `scan`'s transpose
    back cancels)."""
    return jnp.swapaxes(ys, 0, 1) if batch_major else ys


class NativeLayer(NamedTuple):
    """A layer of a stacked closed loop on the native kernels (`native.stack_closed_loop`): its `kernels`,
    `weights`, `carry` (a tuple of `[B, H]` arrays), the type its final carry is returned as, its input and
    hidden widths, its cell ("lstm" or "gru"), the cores its plan gives a one-layer closed loop, and whether that
    loop takes Strassen's product (`Plan.native_strassen`)."""

    kernels: native.Kernels
    weights: engine.Weights
    carry: tuple
    carry_type: type
    features: int
    hidden: int
    cell: str
    eval_threads: int
    strassen: bool = False


def stack_closed_loop(layers, params, carry, x0, steps: int, w_d, b_d):
    """`(carry, ys [B, steps, F])` of `steps` closed-loop steps from `x0 [B, F]` through a stack of layers and
    the affine head `y = h w_d + b_d` (`w_d [H_top, F]`, `b_d [F]` or None) on the native stacked closed-loop
    kernel: `layers` are the layers' `sequence.native_layer`, `params` and `carry` theirs, bottom first. None
    where it does not apply to one of them (as `sequence.closed_loop`)."""
    head = _float32_head(w_d, b_d, x0)
    if head is None:
        return None
    batch, width = x0.shape
    parts = []
    for native_layer, p, c in zip(layers, params, carry):
        part = native_layer(p, c, batch, width, steps)
        if part is None:
            return None
        parts.append(part)
        width = part.hidden
    threads = stack_closed_loop_threads(batch, steps, [(part.features, part.hidden, part.cell) for part in parts])
    if threads is None:
        return None
    carries, ys = native.stack_closed_loop([(part.kernels, part.weights, part.carry) for part in parts], x0, *head,
                                           steps, threads=threads)
    return tuple(part.carry_type(*c) for part, c in zip(parts, carries)), ys


def _float32_affine(w, b):
    """`(w, b)` of a float32 affine head (`b` zeros where it has none), else None."""
    b = jnp.zeros(w.shape[-1], w.dtype) if b is None else b
    return (w, b) if jnp.result_type(w) == jnp.result_type(b) == jnp.float32 else None


def _float32_head(w_d, b_d, x0):
    """`(w_d, b_d)` of a closed loop's head as `_float32_affine`, None as well where `x0` is not float32."""
    return _float32_affine(w_d, b_d) if jnp.result_type(x0) == jnp.float32 else None


@functools.lru_cache(maxsize=None)
def _native_loop(maths: engine.Gated, plan, kernels: native.Kernels, head=None):
    """The engine's loop (same arguments and results) with the native `kernels` where the plan says: evaluation
    on their forward pass (`plan.native`; with a head, with the head inside for one linear dense, else
    `plan.native_head`, else the engine's loop), gradients from their training forward and backward passes
    (`plan.native_train`, else the engine's forward and backward passes). With a head, the head runs over all
    steps after the layer, and its VJP before the layer's. Without a head the kernels write their outputs
    `[B, T, H]` (`_time_major`), with one `[T, B, H]`, as the head takes them; under a gradient with one linear
    dense (`plan.native_train_head`) the head runs inside the training kernels instead, all `[B, T, ..]`."""
    engine_loop = _loop(maths, plan, head)
    on_kernel = plan.native_head if head is not None else plan.native
    train_threads = plan.native_threads  # evaluation: `plan.native_eval_threads`
    batch_major = head is None

    def forward(w, carry, xs_TB, affine=None):
        layout = affine is not None or batch_major  # the head's outputs: always `[B, T, O]`
        new_carry, ys = native.layer_forward(kernels, w, carry, xs_TB, batch_major=layout,
                                             threads=plan.native_eval_threads, head=affine,
                                             strassen=plan.native_strassen)
        return new_carry, _time_major(ys, layout)

    def inside_affine(head_params):
        """`(w, b)` of a head the kernels can run inside (one float32 linear dense), else None."""
        return _float32_affine(*head.affine(head_params)) if head.affine is not None else None

    if head is None:
        def evaluate(w, carry, xs_TB):
            return forward(w, carry, xs_TB) if on_kernel else engine_loop(w, carry, xs_TB)
    else:
        def evaluate(w, head_params, carry, xs_TB):
            affine = inside_affine(head_params) if plan.native else None
            if affine is not None:  # the head inside the kernel: only its outputs are written
                return forward(w, carry, xs_TB, affine)
            if not on_kernel:
                return engine_loop(w, head_params, carry, xs_TB)
            new_carry, ys_TB = forward(w, carry, xs_TB)
            return new_carry, head.sequence(head_params, ys_TB)

    def train(w, carry, xs_TB):
        new_carry, ys, kept = native.layer_train(kernels, w, carry, xs_TB, batch_major=batch_major,
                                                 threads=train_threads, keep_gates=plan.native_keep_gates)
        return (new_carry, _time_major(ys, batch_major)), (w, carry, xs_TB, kept)

    def backward(saved, d_carry, dys_TB):
        w, carry, xs_TB, kept = saved
        grads, d_carry, dxs = native.layer_backward(kernels, w, carry, xs_TB, kept, _time_major(dys_TB, batch_major),
                                                    d_carry, batch_major=batch_major, threads=train_threads)
        return engine.Weights(*grads), d_carry, dxs

    fn = jax.custom_vjp(evaluate)
    if not plan.native_train:
        fn.defvjp(lambda *args: jax.vjp(engine_loop, *args), lambda vjp, cotangents: vjp(cotangents))
    elif head is None:
        fn.defvjp(train, lambda saved, cotangents: backward(saved, *cotangents))
    else:
        def fwd_head(w, head_params, carry, xs_TB):
            # (jax.vjp of a head the kernels cannot run gives None and is not used)
            affine, affine_vjp = jax.vjp(inside_affine, head_params) if plan.native_train_head else (None, None)
            if affine is not None:
                new_carry, out, kept = native.layer_train(kernels, w, carry, xs_TB, threads=train_threads, head=affine,
                                                          keep_gates=plan.native_keep_gates)
                return (new_carry, _time_major(out, True)), ((w, carry, xs_TB, kept), None, (affine, affine_vjp))
            (new_carry, ys_TB), saved = train(w, carry, xs_TB)
            out, head_vjp = jax.vjp(head.sequence, head_params, ys_TB)
            return (new_carry, out), (saved, head_vjp, None)

        def bwd_head(saved_head, cotangents):
            saved, head_vjp, inside = saved_head
            d_carry, d_out = cotangents
            if inside is not None:  # the head's gradient inside the backward kernel
                (w, carry, xs_TB, kept), (affine, affine_vjp) = saved, inside
                g, d_carry, dxs, d_affine = native.layer_backward_head(
                    kernels, w, carry, xs_TB, kept, _time_major(d_out, True), d_carry, affine, threads=train_threads)
                return engine.Weights(*g), affine_vjp(d_affine)[0], d_carry, dxs
            d_head, dys_TB = head_vjp(d_out)
            g, d_carry, dxs = backward(saved, d_carry, dys_TB)
            return g, d_head, d_carry, dxs

        fn.defvjp(fwd_head, bwd_head)
    return fn


def fast_sequence(step, initial_carry, maths: engine.Gated, *, maths_supported: bool, param_names: tuple,
                  carry_type, matmul_dtype=None, native_kernels: native.Kernels | None = None):
    """A `Cell.sequence` running `maths` through `seqjax.fast.engine` with the plan `plan_for` picks.

    `param_names`: the params holding `(w_x, w_h, b_x[, b_h])`. `matmul_dtype` (mixed precision, as the
    step): the loops get `w_x` and `w_h` rounded to it once, and `engine.matmul` rounds the activations.
    It hands over to the reference loop over `step` (same maths step by step) when the cell's maths is not
    `maths`, with `mask`/`reset`, with recurrent dropout, or when params, carry and inputs are not all of
    one floating dtype. Input dropout multiplies all steps at once, as the step does.

    `native_kernels` (float32 only, where `seqjax.fast.native.available()`): evaluation runs their forward
    pass where the plan says `native` (`native_head` with a head), gradients their training passes where it
    says `native_train`, instead of the engine's loops; `sequence.closed_loop` runs their closed loop.

    `head` (an `engine.Head`, with its `head_params`; `chain` passes the dense / activation parts that
    follow the layer, without `mask` or `reset`): the outputs are the head's, and evaluated without a
    gradient the head runs inside the loop (`sequence.takes_head` marks functions that accept it).
    """
    reference = reference_loop(step, initial_carry)
    names = tuple(param_names) + (None,) * (4 - len(param_names))

    def weights(params):
        """`params` as `engine.Weights` (None for a cell's missing second bias)."""
        return engine.Weights(*(None if n is None else params[n] for n in names))

    def sequence(params, carry, xs_TB, *, mask_TB=None, reset_TB=None, noise=None, unroll=1,
                 masked_output="previous", head=None, head_params=()):
        params, xs_TB, noise = with_empty_feature(params, param_names[0], xs_TB, noise)

        def by_reference():  # on the inputs as given: the reference step applies the dropout masks itself
            # mixed precision: the weights rounded once here, not in every step (the same numbers)
            p = params if matmul_dtype is None else {**params, **{n: params[n].astype(matmul_dtype)
                                                                  for n in param_names[:2]}}
            new_carry, ys = reference(p, carry, xs_TB, mask_TB=mask_TB, reset_TB=reset_TB, noise=noise,
                                      unroll=unroll, masked_output=masked_output)
            return new_carry, ys if head is None else head.sequence(head_params, ys)

        arrays = [params[n] for n in param_names] + list(carry) + [xs_TB]
        dtypes = {jnp.result_type(a) for a in arrays}
        if (not maths_supported or mask_TB is not None or reset_TB is not None
                or (noise is not None and "h" in noise) or len(dtypes) != 1
                or not jnp.issubdtype(next(iter(dtypes)), jnp.floating)):
            return by_reference()
        time, batch, features = xs_TB.shape
        plan = plan_for(batch, time, features, carry[0].shape[-1], maths.name)
        evaluate_native = plan.native_head if head is not None and head.affine is None else plan.native
        on_kernels = ((evaluate_native or plan.native_train) and native_kernels is not None and matmul_dtype is None
                      and next(iter(dtypes)) == jnp.float32 and native.available())
        if plan.use_reference and not on_kernels:
            return by_reference()
        # one input dropout mask for the whole call, as the step applies it
        inputs = xs_TB * noise["x"] if noise is not None and "x" in noise else xs_TB
        if unroll != 1:
            plan = plan._replace(unroll=unroll)
        w = weights(params)
        if matmul_dtype is not None:
            w = w._replace(w_x=w.w_x.astype(matmul_dtype), w_h=w.w_h.astype(matmul_dtype))
        loop = _native_loop(maths, plan, native_kernels, head) if on_kernels else _loop(maths, plan, head)
        if head is None:
            new_carry, ys_TB = loop(w, tuple(carry), inputs)
        else:
            new_carry, ys_TB = loop(w, tuple(head_params), tuple(carry), inputs)
        return carry_type(*new_carry), ys_TB

    def native_layer(params, carry, batch: int, features: int, steps: int):
        """This layer as a `NativeLayer` of a closed loop of `steps` steps on `[batch, features]` inputs; None
        where its kernels do not apply (other maths, mixed precision, not all float32, the plan or the machine
        without the closed-loop kernels)."""
        arrays = [params[n] for n in param_names] + list(carry)
        if (not maths_supported or matmul_dtype is not None
                or any(jnp.result_type(a) != jnp.float32 for a in arrays)):
            return None
        hidden = carry[0].shape[-1]
        plan = plan_for(batch, steps, features, hidden, maths.name)
        if not plan.native_closed_loop or not native.available():
            return None
        return NativeLayer(native_kernels, weights(params), tuple(carry), carry_type, features, hidden, maths.name,
                           plan.native_eval_threads, plan.native_strassen)

    def closed_loop(params, carry, x0, steps: int, w_d, b_d):
        """`(carry, ys [B, steps, F])`: `steps` closed-loop steps from `x0 [B, F]` through the layer and the
        affine head `y = h w_d + b_d` (`w_d [H, F]`, `b_d [F]` or None), each `y` fed back as the next input,
        on the native closed-loop kernel; None where it does not apply (as `native_layer`, or a head or `x0`
        not float32)."""
        head = _float32_head(w_d, b_d, x0)
        if head is None:
            return None
        batch, features = x0.shape
        layer = native_layer(params, carry, batch, features, steps)
        if layer is None:
            return None
        new_carry, ys = native.layer_closed_loop(native_kernels, layer.weights, layer.carry, x0, *head, steps,
                                                 threads=layer.eval_threads, strassen=layer.strassen)
        return carry_type(*new_carry), ys

    sequence.takes_head = True
    if native_kernels is not None:
        sequence.closed_loop = closed_loop  # `chain` of this layer and a dense head gives it to `sj.rollout`
        sequence.native_layer = native_layer  # `chain` of such layers and a dense head: `stack_closed_loop`
    return sequence
