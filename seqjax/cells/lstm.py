"""LSTM cell. Parameters `w_x [F, 4H]`, `w_h [H, 4H]`, `b [4H]`, gate blocks i, f, g, o (Keras/PyTorch order)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from seqjax.cell import Cell, CellConfig, compiled_init, matmul
from seqjax.cells import _recurrent as rc
from seqjax.fast.lstm import lstm_sequence


class LSTMCarry(NamedTuple):
    """LSTM state: hidden `h [B, H]` (also the step's output) and cell `c [B, H]`."""

    h: jax.Array
    c: jax.Array


def lstm(
    hidden_size: int,
    *,
    activation="tanh",
    recurrent_activation="sigmoid",
    unit_forget_bias: bool = True,
    dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    kernel_init=None,
    recurrent_init=None,
    bias_init=None,
    dtype=jnp.float32,
    matmul_dtype=None,
) -> Cell:
    """Long short-term memory cell, as Keras's `LSTM`.

    `i, f, g, o = split(x w_x + h w_h + b)`; `c' = σ(f) c + σ(i) tanh(g)`; `h' = σ(o) tanh(c')`, with
    σ = `recurrent_activation` and tanh = `activation` (callables or Keras names). With
    `unit_forget_bias` the forget block of `b` starts at 1, as Keras does. `dropout` / `recurrent_dropout`
    are variational: one mask per call on the input and on `h` before the recurrent matmul, used only
    when `scan` is given a key. Step: `x_t [B, F] -> y_t = h' [B, H]`; carry `LSTMCarry(h, c)`.
    `matmul_dtype=jnp.bfloat16` is mixed precision: each matmul's operands are rounded to bfloat16 and its
    products summed in float32; params, carry, gates and outputs stay float32 (about three significant
    digits in the matmuls; faster where bfloat16 matmuls are: GPUs, CPUs with AVX512-BF16). None
    (default): matmuls in the params' dtype.
    """
    k_init, r_init, b_init = rc.default_initializers()
    opts = rc.recurrent_options(
        "lstm", hidden_size, 4,
        activation=activation, recurrent_activation=recurrent_activation,
        dropout=dropout, recurrent_dropout=recurrent_dropout,
        kernel_init=kernel_init or k_init, recurrent_init=recurrent_init or r_init,
        bias_init=bias_init or b_init, dtype=dtype, matmul_dtype=matmul_dtype,
    )
    hidden = opts.hidden_size

    def init(key, in_features):
        k_w, k_b = jax.random.split(key)
        params = rc.init_kernels(opts, k_w, in_features)
        b = rc.init_bias(opts, k_b)
        if unit_forget_bias:
            b = b.at[hidden:2 * hidden].set(1)
        params["b"] = b
        return params

    def initial_carry(batch_size, dtype=jnp.float32):
        return LSTMCarry(*rc.zeros_carry(opts, batch_size, dtype, 2))

    def step(params, carry, x_t, noise=None):
        h, c = carry
        x_t, h_in = rc.apply_noise(noise, x_t, h)
        md = opts.matmul_dtype
        z = matmul(x_t, params["w_x"], md) + matmul(h_in, params["w_h"], md) + params["b"]
        i, f, g, o = jnp.split(z, 4, axis=-1)
        sig, act = opts.recurrent_activation, opts.activation
        c_new = sig(f) * c + sig(i) * act(g)
        h_new = sig(o) * act(c_new)
        return LSTMCarry(h_new.astype(h.dtype), c_new.astype(c.dtype)), h_new

    return Cell(
        init=compiled_init(init),
        initial_carry=initial_carry,
        step=step,
        input_spec=lambda params: rc.input_spec(opts, params),
        sample_noise=lambda key, params, batch_size, dtype=jnp.float32: rc.sample_noise(
            opts, key, params, batch_size, dtype),
        sequence=lstm_sequence(step, initial_carry, activation=opts.activation,
                               recurrent_activation=opts.recurrent_activation, carry_type=LSTMCarry,
                               matmul_dtype=opts.matmul_dtype),
        name="lstm",
        config=CellConfig(hidden_size=hidden, activation=activation, recurrent_activation=recurrent_activation,
                          unit_forget_bias=unit_forget_bias, dropout=opts.dropout,
                          recurrent_dropout=opts.recurrent_dropout, matmul_dtype=opts.matmul_dtype),
    )
