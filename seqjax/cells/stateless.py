"""Stateless cells: `dense`, `embed` and `activation`. Their carry is the empty tuple `()`.

As sequence functions they apply to every step at once (one matmul over `[T, B, F]`), which is the
same as stepping through time.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from seqjax.cell import (
    Cell,
    InputSpec,
    check_float_dtype,
    check_param_shape,
    check_size,
    compiled_init,
    draw,
    no_noise,
    matmul,
    resolve_activation,
)
from seqjax.loop import fill_masked


def _stateless_cell(name: str, init, apply: Callable, input_spec, affine: Callable | None = None) -> Cell:
    """A cell from `apply(params, x) -> y` that holds no state. `affine(params) -> (w, b or None)` where `apply`
    is `x w + b` in the params' dtype (a closed loop may then run it inside a recurrent layer's kernel)."""

    def initial_carry(batch_size, dtype=jnp.float32):
        check_size(batch_size, f"sj.{name}.initial_carry", "batch_size")
        return ()

    def step(params, carry, x_t, noise=None):
        return carry, apply(params, x_t)

    def sequence(params, carry, xs_TB, *, mask_TB=None, reset_TB=None, noise=None, unroll=1,
                 masked_output="previous"):
        return carry, fill_masked(apply(params, xs_TB), mask_TB, masked_output)

    sequence.pointwise = True  # each step's output depends on that step's input only (`chain` may fuse it)
    if affine is not None:
        sequence.affine = affine
    return Cell(init=compiled_init(init), initial_carry=initial_carry, step=step, input_spec=input_spec,
                sample_noise=no_noise, sequence=sequence, name=name)


def dense(features: int, *, activation=None, use_bias: bool = True, kernel_init=None, bias_init=None,
          dtype=jnp.float32, matmul_dtype=None) -> Cell:
    """Per-step affine map (Keras's `TimeDistributed(Dense)`): `y = activation(x w + b)`.

    Params `w [F, features]`, `b [features]` (absent without bias). Step `x_t [B, F] -> [B, features]`.
    `matmul_dtype` (mixed precision: `x` and `w` rounded to it, products summed in `x`'s dtype) as in `sj.lstm`.
    """
    check_size(features, "sj.dense", "features")
    act = resolve_activation(activation if activation is not None else "linear", "sj.dense", "activation")
    dtype = check_float_dtype(dtype, "sj.dense", "dtype")
    matmul_dtype = None if matmul_dtype is None else check_float_dtype(matmul_dtype, "sj.dense", "matmul_dtype")
    kernel_init = kernel_init or jax.nn.initializers.glorot_uniform()
    bias_init = bias_init or jax.nn.initializers.zeros

    def init(key, in_features):
        check_size(in_features, "sj.dense.init", "in_features")
        k_w, k_b = jax.random.split(key)
        params = {"w": draw(kernel_init, k_w, (in_features, features), dtype)}
        if use_bias:
            params["b"] = draw(bias_init, k_b, (features,), dtype)
        return params

    def apply(params, x):
        y = matmul(x, params["w"], matmul_dtype)
        if use_bias:
            y = y + params["b"]
        return act(y)

    def input_spec(params):
        w = check_param_shape(params, "w", (None, features), "sj.dense")
        if use_bias:
            check_param_shape(params, "b", (features,), "sj.dense")
        return InputSpec((int(w.shape[0]),))

    def affine(params):
        return params["w"], params.get("b")

    linear = activation is None or activation == "linear"
    return _stateless_cell("dense", init, apply, input_spec, affine if linear and matmul_dtype is None else None)


def _uniform_symmetric(limit):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -limit, limit)

    return init


def embed(vocab_size: int, features: int, *, embedding_init=None, dtype=jnp.float32) -> Cell:
    """Token embedding (Keras's `Embedding`): integer ids `[B]` per step -> `table[ids]` `[B, features]`.

    Params `table [vocab_size, features]`, initialised uniform in [-0.05, 0.05] as Keras does. Its input
    is integer ids, so `scan` takes `xs [B, T]` ints. Ids outside `[0, vocab_size)` give NaN rows rather
    than a silently clamped lookup. `init(key, in_features)` accepts `None` or `vocab_size`.
    """
    check_size(vocab_size, "sj.embed", "vocab_size")
    check_size(features, "sj.embed", "features")
    dtype = check_float_dtype(dtype, "sj.embed", "dtype")
    embedding_init = embedding_init or _uniform_symmetric(0.05)

    def init(key, in_features=None):
        if in_features is not None and in_features != vocab_size:
            raise ValueError(
                f"sj.embed.init: in_features must be None or vocab_size={vocab_size} (the inputs are "
                f"token ids); got {in_features!r}")
        return {"table": draw(embedding_init, key, (vocab_size, features), dtype)}

    def apply(params, ids):
        return jnp.take(params["table"], ids, axis=0, mode="fill", fill_value=jnp.nan)

    def input_spec(params):
        check_param_shape(params, "table", (vocab_size, features), "sj.embed")
        return InputSpec((), integer=True)

    return _stateless_cell("embed", init, apply, input_spec)


def activation(fn) -> Cell:
    """A stateless cell applying `fn` (a callable or a Keras name such as "softmax") to each step."""
    fn = resolve_activation(fn, "sj.activation", "fn")

    def init(key, in_features):
        check_size(in_features, "sj.activation.init", "in_features")
        return {}

    def input_spec(params):
        if params != {}:
            raise ValueError(f"sj.activation: params must be {{}}; got {params!r}")
        return InputSpec((None,))

    return _stateless_cell("activation", init, lambda params, x: fn(x), input_spec)
