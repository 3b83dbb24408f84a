"""SimpleRNN fast path (tanh): the `sequence` of `sj.simple_rnn`. `h' = tanh(x w_x + b + h w_h)`.

The backward pass needs only the outputs `h'` (`1 - h'^2` is tanh's derivative). Other activations, `mask`, `reset`
and recurrent dropout run the reference loop.
"""

from __future__ import annotations

import jax.numpy as jnp

from seqjax.fast._common import fast_sequence
from seqjax.fast.engine import Gated


def _step(w, carry, z, keep):
    return (jnp.tanh(z[0]),), (() if keep else None)


def _backward(w, carry_prev, carry_new, res, d_carry):
    (h_new,), (dh,) = carry_new, d_carry
    da = dh * (1 - h_new * h_new)
    return None, (), da, da


SIMPLE_RNN = Gated("simple_rnn", True, 1, _step, _backward)


def simple_rnn_sequence(step, initial_carry, *, activation, carry_type, matmul_dtype=None):
    """The fast `sequence` of a SimpleRNN cell built from its `step` (the reference it falls back to)."""
    return fast_sequence(step, initial_carry, SIMPLE_RNN, param_names=("w_x", "w_h", "b"), carry_type=carry_type,
                         maths_supported=activation is jnp.tanh, matmul_dtype=matmul_dtype)
