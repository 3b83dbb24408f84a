"""Pieces the gated recurrent cells share: options, initialisation, input checks, dropout masks."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from seqjax.cell import (
    InputSpec,
    check_float_dtype,
    check_param_shape,
    check_rate,
    check_size,
    draw,
    dropout_mask,
    resolve_activation,
)

Initializer = Callable[..., jax.Array]


class RecurrentOptions(NamedTuple):
    """Validated hyperparameters of a recurrent cell (the closure of `lstm`, `gru`, `simple_rnn`)."""

    name: str
    hidden_size: int
    blocks: int  # gate blocks stacked along the last axis of w_x / w_h (4 LSTM, 3 GRU, 1 SimpleRNN)
    activation: Callable[[jax.Array], jax.Array]
    recurrent_activation: Callable[[jax.Array], jax.Array]
    dropout: float
    recurrent_dropout: float
    kernel_init: Initializer
    recurrent_init: Initializer
    bias_init: Initializer
    dtype: Any
    matmul_dtype: Any = None  # None, or the dtype matmul operands are rounded to (mixed precision)


def recurrent_options(name, hidden_size, blocks, *, activation, recurrent_activation, dropout,
                      recurrent_dropout, kernel_init, recurrent_init, bias_init, dtype,
                      matmul_dtype=None) -> RecurrentOptions:
    where = f"sj.{name}"
    return RecurrentOptions(
        name=name,
        hidden_size=check_size(hidden_size, where, "hidden_size"),
        blocks=blocks,
        activation=resolve_activation(activation, where, "activation"),
        recurrent_activation=resolve_activation(recurrent_activation, where, "recurrent_activation"),
        dropout=check_rate(dropout, where, "dropout"),
        recurrent_dropout=check_rate(recurrent_dropout, where, "recurrent_dropout"),
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
        dtype=check_float_dtype(dtype, where, "dtype"),
        matmul_dtype=None if matmul_dtype is None else check_float_dtype(matmul_dtype, where, "matmul_dtype"),
    )


def default_initializers():
    """Keras's defaults: Glorot-uniform input kernel, orthogonal recurrent kernel, zero bias."""
    init = jax.nn.initializers
    return init.glorot_uniform(), init.orthogonal(), init.zeros


def init_kernels(opts: RecurrentOptions, key, in_features) -> dict:
    """`w_x [F, blocks*H]` and `w_h [H, blocks*H]` drawn with the cell's initialisers."""
    check_size(in_features, f"sj.{opts.name}.init", "in_features")
    h = opts.hidden_size
    k_x, k_h = jax.random.split(key)
    w_x = draw(opts.kernel_init, k_x, (in_features, opts.blocks * h), opts.dtype)
    w_h = draw(opts.recurrent_init, k_h, (h, opts.blocks * h), opts.dtype)
    return {"w_x": w_x, "w_h": w_h}


def init_bias(opts: RecurrentOptions, key) -> jax.Array:
    return draw(opts.bias_init, key, (opts.blocks * opts.hidden_size,), opts.dtype)


def input_spec(opts: RecurrentOptions, params, bias_names=("b",)) -> InputSpec:
    """Checks every parameter's shape against the cell and returns the step input it expects."""
    where = f"sj.{opts.name}"
    hb = opts.blocks * opts.hidden_size
    w_x = check_param_shape(params, "w_x", (None, hb), where)
    check_param_shape(params, "w_h", (opts.hidden_size, hb), where)
    for name in bias_names:
        check_param_shape(params, name, (hb,), where)
    return InputSpec((int(w_x.shape[0]),))


def sample_noise(opts: RecurrentOptions, key, params, batch_size, dtype=jnp.float32):
    """Variational dropout masks for one call: `{"x": [B, F], "h": [B, H]}`, each only when its rate > 0."""
    if opts.dropout == 0.0 and opts.recurrent_dropout == 0.0:
        return None
    k_x, k_h = jax.random.split(key)
    noise = {}
    if opts.dropout > 0.0:
        in_features = params["w_x"].shape[0]
        noise["x"] = dropout_mask(k_x, opts.dropout, (batch_size, in_features), dtype)
    if opts.recurrent_dropout > 0.0:
        noise["h"] = dropout_mask(k_h, opts.recurrent_dropout, (batch_size, opts.hidden_size), dtype)
    return noise


def apply_noise(noise, x_t, h):
    """The step's input and the recurrent input after dropout (unchanged without noise)."""
    if noise is None:
        return x_t, h
    if "x" in noise:
        x_t = x_t * noise["x"]
    if "h" in noise:
        h = h * noise["h"]
    return x_t, h


def zeros_carry(opts: RecurrentOptions, batch_size, dtype, fields: int):
    check_size(batch_size, f"sj.{opts.name}.initial_carry", "batch_size")
    dtype = check_float_dtype(dtype, f"sj.{opts.name}.initial_carry", "dtype")
    return tuple(jnp.zeros((batch_size, opts.hidden_size), dtype) for _ in range(fields))
