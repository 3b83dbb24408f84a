"""GRU cell. Parameters `w_x [F, 3H]`, `w_h [H, 3H]`, `b_x [3H]`, `b_h [3H]`, gate blocks z, r, n (Keras order)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from seqjax.cell import Cell, CellConfig, compiled_init, matmul
from seqjax.cells import _recurrent as rc
from seqjax.fast.gru import gru_sequence


class GRUCarry(NamedTuple):
    """GRU state: hidden `h [B, H]`, also the step's output."""

    h: jax.Array


def gru(
    hidden_size: int,
    *,
    reset_after: bool = True,
    activation="tanh",
    recurrent_activation="sigmoid",
    dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    kernel_init=None,
    recurrent_init=None,
    bias_init=None,
    dtype=jnp.float32,
    matmul_dtype=None,
) -> Cell:
    """Gated recurrent unit, as Keras's `GRU` (and, with `reset_after=True`, PyTorch's `GRU`).

    `z = σ(x W_z + b_xz + h U_z + b_hz)`, `r` likewise, then
    `reset_after=True`:  `n = tanh(x W_n + b_xn + r * (h U_n + b_hn))` (Keras 2+/PyTorch/Flax form);
    `reset_after=False`: `n = tanh(x W_n + b_xn + (r * h) U_n + b_hn)` (the older Keras form);
    `h' = z * h + (1 - z) * n`. Step `x_t [B, F] -> y_t = h' [B, H]`; carry `GRUCarry(h)`.
    Dropout and `matmul_dtype` (mixed precision) as in `sj.lstm`.
    """
    if not isinstance(reset_after, bool):
        raise TypeError(f"sj.gru: reset_after must be a bool; got {reset_after!r}")
    k_init, r_init, b_init = rc.default_initializers()
    opts = rc.recurrent_options(
        "gru", hidden_size, 3,
        activation=activation, recurrent_activation=recurrent_activation,
        dropout=dropout, recurrent_dropout=recurrent_dropout,
        kernel_init=kernel_init or k_init, recurrent_init=recurrent_init or r_init,
        bias_init=bias_init or b_init, dtype=dtype, matmul_dtype=matmul_dtype,
    )
    hidden = opts.hidden_size

    def init(key, in_features):
        k_w, k_bx, k_bh = jax.random.split(key, 3)
        params = rc.init_kernels(opts, k_w, in_features)
        params["b_x"] = rc.init_bias(opts, k_bx)
        params["b_h"] = rc.init_bias(opts, k_bh)
        return params

    def initial_carry(batch_size, dtype=jnp.float32):
        return GRUCarry(*rc.zeros_carry(opts, batch_size, dtype, 1))

    def step(params, carry, x_t, noise=None):
        (h,) = carry
        x_t, h_in = rc.apply_noise(noise, x_t, h)
        sig, act = opts.recurrent_activation, opts.activation
        md = opts.matmul_dtype
        x_z, x_r, x_n = jnp.split(matmul(x_t, params["w_x"], md) + params["b_x"], 3, axis=-1)
        w_h, b_h = params["w_h"], params["b_h"]
        if reset_after:
            h_z, h_r, h_n = jnp.split(matmul(h_in, w_h, md) + b_h, 3, axis=-1)
            z = sig(x_z + h_z)
            r = sig(x_r + h_r)
            n = act(x_n + r * h_n)
        else:
            h_zr = matmul(h_in, w_h[:, : 2 * hidden], md) + b_h[: 2 * hidden]
            h_z, h_r = jnp.split(h_zr, 2, axis=-1)
            z = sig(x_z + h_z)
            r = sig(x_r + h_r)
            n = act(x_n + matmul(r * h_in, w_h[:, 2 * hidden:], md) + b_h[2 * hidden:])
        h_new = z * h + (1 - z) * n
        return GRUCarry(h_new.astype(h.dtype)), h_new

    return Cell(
        init=compiled_init(init),
        initial_carry=initial_carry,
        step=step,
        input_spec=lambda params: rc.input_spec(opts, params, ("b_x", "b_h")),
        sample_noise=lambda key, params, batch_size, dtype=jnp.float32: rc.sample_noise(
            opts, key, params, batch_size, dtype),
        sequence=gru_sequence(step, initial_carry, reset_after=reset_after, activation=opts.activation,
                              recurrent_activation=opts.recurrent_activation, carry_type=GRUCarry,
                              matmul_dtype=opts.matmul_dtype),
        name="gru",
        config=CellConfig(hidden_size=hidden, reset_after=reset_after, activation=activation,
                          recurrent_activation=recurrent_activation, dropout=opts.dropout,
                          recurrent_dropout=opts.recurrent_dropout, matmul_dtype=opts.matmul_dtype),
    )
