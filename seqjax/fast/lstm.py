"""LSTM fast path: the `sequence` function of `sj.lstm` (maths for `seqjax.fast.engine`).

Same maths as `sj.lstm`'s step (tests compare them to float32 tolerance): `z = x w_x + h w_h + b`,
`c' = σ(f) c + σ(i) tanh(g)`, `h' = σ(o) tanh(c')`. The backward pass keeps `i, f, g, o` and `c'`
(`tanh(c')` is recomputed). On CPU the native kernels (`seqjax.fast.native`) run the forward pass and,
under a gradient, the forward and backward passes, where the plan chooses them. Used for the default
activations (sigmoid, tanh) without `mask`, `reset` or recurrent dropout; other calls run the reference
loop. Forward-mode autodiff (`jax.jvp`) does not pass the custom VJP: use `sj.lstm(H)._replace(sequence=None)`
for it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seqjax.fast import native
from seqjax.fast._common import NativeLayer, fast_sequence
from seqjax.fast.engine import Gated, Weights


def _step(w, carry, z, keep):
    h, c = carry
    zi, zf, zg, zo = z
    i, f, g, o = jax.nn.sigmoid(zi), jax.nn.sigmoid(zf), jnp.tanh(zg), jax.nn.sigmoid(zo)
    c_new = f * c + i * g
    return (o * jnp.tanh(c_new), c_new), ((i, f, g, o) if keep else None)


def _backward(w, carry_prev, carry_new, res, d_carry):
    _, c_prev = carry_prev
    i, f, g, o = res
    tc = jnp.tanh(carry_new[1])  # recomputed: one array fewer to keep per step
    dh, dc = d_carry
    dc = dc + dh * o * (1 - tc * tc)
    dz = jnp.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                          dh * tc * o * (1 - o)], axis=-1)
    return None, (dc * f,), dz, dz


LSTM = Gated("lstm", True, 6, _step, _backward)


def _native_forward(w, carry, xs_TB, plan, batch_major=True):
    """The forward pass on the native CPU kernel (`seqjax.fast.native`). `batch_major`: its outputs are
    written `[B, T, H]` and `ys_TB` is their transpose, which `scan`'s transpose back cancels (else
    written `[T, B, H]`: for a head, which takes them so)."""
    new_carry, ys = native.lstm_forward(w.w_x, w.w_h, w.b_x, *carry, xs_TB, batch_major=batch_major,
                                        threads=plan.native_threads)
    return new_carry, jnp.swapaxes(ys, 0, 1) if batch_major else ys


def _native_forward_head(w, carry, xs_TB, w_d, b_d, plan):
    """The forward pass with the affine head `(w_d, b_d)` inside the kernel, which writes only the head's
    outputs, batch-major (`ys_TB` their transpose, which `scan`'s transpose back cancels)."""
    new_carry, ys = native.lstm_forward_head(w.w_x, w.w_h, w.b_x, *carry, xs_TB, w_d, b_d,
                                             threads=plan.native_threads)
    return new_carry, jnp.swapaxes(ys, 0, 1)


def _native_train(w, carry, xs_TB, plan, batch_major=True):
    """`_native_forward` keeping what `_native_backward` needs: the outputs and every step's `c`."""
    new_carry, ys, cs = native.lstm_forward_train(w.w_x, w.w_h, w.b_x, *carry, xs_TB, batch_major=batch_major,
                                                  threads=plan.native_threads)
    ys_TB = jnp.swapaxes(ys, 0, 1) if batch_major else ys
    return (new_carry, ys_TB), (w, tuple(carry), xs_TB, ys, cs)


def _native_backward(saved, d_carry, dys_TB, plan, batch_major=True):
    """The gradients of `_native_train` (called with the same `batch_major`) on the native backward kernel:
    `(Weights, (dh0, dc0), dxs_TB)`."""
    w, carry, xs_TB, ys, cs = saved
    dys = jnp.swapaxes(dys_TB, 0, 1) if batch_major else dys_TB
    (dw_x, dw_h, db), d_carry, dxs = native.lstm_backward(w.w_x, w.w_h, w.b_x, *carry, xs_TB, ys, cs, dys, *d_carry,
                                                          batch_major=batch_major, threads=plan.native_threads)
    return Weights(dw_x, dw_h, db, None), d_carry, dxs


def _native_closed_loop(w, carry, x0, steps, w_d, b_d, plan):
    """`steps` closed-loop steps of the layer and the affine head `(w_d, b_d)` on the native kernel:
    `((h, c), ys [B, steps, F])`."""
    return native.lstm_closed_loop(w.w_x, w.w_h, w.b_x, *carry, x0, w_d, b_d, steps, threads=plan.native_threads)


NATIVE = NativeLayer(_native_forward, _native_train, _native_backward, _native_closed_loop, _native_forward_head)


def lstm_sequence(step, initial_carry, *, activation, recurrent_activation, carry_type, matmul_dtype=None):
    """The fast `sequence` of an LSTM cell built from its `step` (the reference it falls back to)."""
    return fast_sequence(step, initial_carry, LSTM, param_names=("w_x", "w_h", "b"), carry_type=carry_type,
                         maths_supported=activation is jnp.tanh and recurrent_activation is jax.nn.sigmoid,
                         matmul_dtype=matmul_dtype, native_layer=NATIVE)
