"""GRU fast path (`reset_after=True`, the Keras/PyTorch/Flax form): the `sequence` of `sj.gru`.

Same maths as the step: `z, r = σ(x W + b_x + h U + b_h)`, `n = tanh(x W_n + b_xn + r (h U_n + b_hn))`,
`h' = z h + (1 - z) n`. The backward pass keeps `z, r, n, h U_n + b_hn` and hands the engine its gate
gradients as `[B, 3H]` arrays, concatenated in the step: one `dzh @ U^T` per step instead of one matmul
per gate block measured 1.07-1.09x faster train steps at large, 1.0-1.14x at long, 1.15x at B 32 T 100
H 64, 1.22x at B 8 T 1000 H 64, alike at medium and many (`python -m benchmarks.attempts --what
gru_train`). `reset_after=False`, other activations, `mask`, `reset` and recurrent dropout run the
reference loop. On CPU the native kernels (`seqjax.fast.native.GRU`) run evaluation, training and closed loops
where the plan chooses them, as for the LSTM.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seqjax.fast import native
from seqjax.fast._common import blocks, fast_sequence
from seqjax.fast.engine import Gated, matmul


def _step(w, carry, xp, keep):
    (h,) = carry
    hidden = h.shape[-1]
    x_z, x_r, x_n = xp
    h_z, h_r, h_n = blocks(matmul(h, w.w_h) + w.b_h, hidden, 3)
    z = jax.nn.sigmoid(x_z + h_z)
    r = jax.nn.sigmoid(x_r + h_r)
    n = jnp.tanh(x_n + r * h_n)
    return (z * h + (1 - z) * n,), ((z, r, n, h_n) if keep else None)


def _backward(w, carry_prev, carry_new, res, d_carry):
    (h_prev,) = carry_prev
    (dh,) = d_carry
    z, r, n, h_n = res
    dn = dh * (1 - z) * (1 - n * n)
    dz, dr = dh * (h_prev - n) * z * (1 - z), dn * h_n * r * (1 - r)
    return dh * z, (), jnp.concatenate([dz, dr, dn], axis=-1), jnp.concatenate([dz, dr, dn * r], axis=-1)


GRU = Gated("gru", False, 5, _step, _backward)


def gru_sequence(step, initial_carry, *, reset_after, activation, recurrent_activation, carry_type,
                 matmul_dtype=None):
    """The fast `sequence` of a GRU cell built from its `step` (the reference it falls back to)."""
    maths = reset_after and activation is jnp.tanh and recurrent_activation is jax.nn.sigmoid
    return fast_sequence(step, initial_carry, GRU, param_names=("w_x", "w_h", "b_x", "b_h"), carry_type=carry_type,
                         maths_supported=maths, matmul_dtype=matmul_dtype, native_kernels=native.GRU)
