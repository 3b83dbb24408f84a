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
from seqjax.fast._common import fast_sequence
from seqjax.fast.engine import Gated


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


def lstm_sequence(step, initial_carry, *, activation, recurrent_activation, carry_type, matmul_dtype=None):
    """The fast `sequence` of an LSTM cell built from its `step` (the reference it falls back to)."""
    return fast_sequence(step, initial_carry, LSTM, param_names=("w_x", "w_h", "b"), carry_type=carry_type,
                         maths_supported=activation is jnp.tanh and recurrent_activation is jax.nn.sigmoid,
                         matmul_dtype=matmul_dtype, native_kernels=native.LSTM)
