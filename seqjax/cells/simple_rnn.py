"""Elman RNN cell. Parameters `w_x [F, H]`, `w_h [H, H]`, `b [H]`; `h' = tanh(x w_x + h w_h + b)`."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from seqjax.cell import Cell, CellConfig, compiled_init, matmul
from seqjax.cells import _recurrent as rc
from seqjax.fast.simple_rnn import simple_rnn_sequence


class SimpleRNNCarry(NamedTuple):
    """SimpleRNN state: hidden `h [B, H]`, also the step's output."""

    h: jax.Array


def simple_rnn(
    hidden_size: int,
    *,
    activation="tanh",
    dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    kernel_init=None,
    recurrent_init=None,
    bias_init=None,
    dtype=jnp.float32,
    matmul_dtype=None,
) -> Cell:
    """Fully connected recurrent cell, as Keras's `SimpleRNN` and PyTorch's `RNN`.

    `h' = activation(x w_x + h w_h + b)`. Step `x_t [B, F] -> y_t = h' [B, H]`; carry `SimpleRNNCarry(h)`.
    Dropout and `matmul_dtype` (mixed precision) as in `sj.lstm`.
    """
    k_init, r_init, b_init = rc.default_initializers()
    opts = rc.recurrent_options(
        "simple_rnn", hidden_size, 1,
        activation=activation, recurrent_activation="linear",
        dropout=dropout, recurrent_dropout=recurrent_dropout,
        kernel_init=kernel_init or k_init, recurrent_init=recurrent_init or r_init,
        bias_init=bias_init or b_init, dtype=dtype, matmul_dtype=matmul_dtype,
    )

    def init(key, in_features):
        k_w, k_b = jax.random.split(key)
        params = rc.init_kernels(opts, k_w, in_features)
        params["b"] = rc.init_bias(opts, k_b)
        return params

    def initial_carry(batch_size, dtype=jnp.float32):
        return SimpleRNNCarry(*rc.zeros_carry(opts, batch_size, dtype, 1))

    def step(params, carry, x_t, noise=None):
        (h,) = carry
        x_t, h_in = rc.apply_noise(noise, x_t, h)
        md = opts.matmul_dtype
        z = matmul(x_t, params["w_x"], md) + matmul(h_in, params["w_h"], md) + params["b"]
        h_new = opts.activation(z)
        return SimpleRNNCarry(h_new.astype(h.dtype)), h_new

    return Cell(
        init=compiled_init(init),
        initial_carry=initial_carry,
        step=step,
        input_spec=lambda params: rc.input_spec(opts, params),
        sample_noise=lambda key, params, batch_size, dtype=jnp.float32: rc.sample_noise(
            opts, key, params, batch_size, dtype),
        sequence=simple_rnn_sequence(step, initial_carry, activation=opts.activation, carry_type=SimpleRNNCarry,
                                     matmul_dtype=opts.matmul_dtype),
        name="simple_rnn",
        config=CellConfig(hidden_size=opts.hidden_size, activation=activation, dropout=opts.dropout,
                          recurrent_dropout=opts.recurrent_dropout, matmul_dtype=opts.matmul_dtype),
    )
