"""cuDNN's LSTM behind an LSTM cell's `sequence` hook, on CUDA GPUs (`jax.experimental.rnn`).

    cell = seqjax.fast.cudnn.cudnn_lstm(sj.lstm(512))   # same params, carry and maths as sj.lstm(512)
    carry, ys = sj.scan(sj.chain(cell, sj.dense(8)), params, carry, xs)

Opt-in and unmeasured: no GPU was available to this project's benchmarks, so the default GPU plan stays
the scan (`seqjax.fast.plan`) and this path is for measuring against it (`python -m benchmarks.bench` adds
it as the `seqjax_cudnn` column on a CUDA backend). Where cuDNN cannot run the call — another backend, a
`mask` or `reset`, recurrent dropout, dtypes other than float32 — the cell's own path runs it with the same
maths. cuDNN's kernel has no batching rule: do not `vmap` over it. cuDNN may use TF32 for float32 matmuls
as XLA's GPU dots do; `jax.default_matmul_precision("highest")` turns that off for both.

The weights travel in cuDNN's flat layout (`to_cudnn_weights`): `W_ih = w_x^T [4H, F]`, `W_hh = w_h^T
[4H, H]`, `b_ih = b`, `b_hh = 0`; gate blocks i, f, g, o in both. Tests check the layout, values and
gradients on CPU through JAX's reference implementation of the same call (`jax.experimental.rnn.lstm_ref`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from seqjax.cell import Cell, resolve_activation
from seqjax.checks import check_cell
from seqjax.cells.lstm import LSTMCarry
from seqjax.loop import run_sequence

_WHERE = "seqjax.fast.cudnn.cudnn_lstm"


def to_cudnn_weights(params: dict) -> jax.Array:
    """An LSTM's `{w_x [F, 4H], w_h [H, 4H], b [4H]}` as cuDNN's flat weights `[4H (F + H) + 8H]`."""
    w_x, w_h, b = params["w_x"], params["w_h"], params["b"]
    return jnp.concatenate([w_x.T.reshape(-1), w_h.T.reshape(-1), b, jnp.zeros_like(b)])


def from_cudnn_weights(weights: jax.Array, features: int, hidden: int) -> dict:
    """cuDNN's flat weights of a one-layer LSTM `features -> hidden` as seqjax's `{w_x, w_h, b}`
    (`b = b_ih + b_hh`)."""
    n = 4 * hidden
    expected = n * (features + hidden) + 2 * n
    if jnp.shape(weights) != (expected,):
        raise ValueError(f"seqjax.fast.cudnn.from_cudnn_weights: weights must have shape ({expected},) for "
                         f"features={features}, hidden={hidden}; got {jnp.shape(weights)}")
    w_x = weights[:n * features].reshape(n, features).T
    w_h = weights[n * features:n * (features + hidden)].reshape(n, hidden).T
    b_ih, b_hh = weights[n * (features + hidden):].reshape(2, n)
    return {"w_x": w_x, "w_h": w_h, "b": b_ih + b_hh}


def cudnn_call(x_BTF, h0, c0, weights, lengths, features: int, hidden: int):
    """`jax.experimental.rnn.lstm` for one unidirectional layer: `(y [B, T, H], h_n [1, B, H], c_n [1, B, H])`."""
    from jax.experimental import rnn

    return rnn.lstm(x_BTF, h0, c0, weights, lengths, input_size=features, hidden_size=hidden, num_layers=1,
                    dropout=0.0, bidirectional=False)


def reference_call(x_BTF, h0, c0, weights, lengths, features: int, hidden: int):
    """JAX's reference implementation of `cudnn_call` (any backend), from the same flat weights."""
    from jax.experimental import rnn

    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, features, hidden, 1, False)
    return rnn.lstm_ref(x_BTF, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, features, hidden, 1, 0.0, False)


def layer_sequence(params: dict, carry, xs_TB, call):
    """One LSTM layer over `xs_TB [T, B, F]` from `carry` through `call` (`cudnn_call` or `reference_call`):
    `(LSTMCarry(h, c), ys [T, B, H])`."""
    time, batch, features = xs_TB.shape
    hidden = params["w_h"].shape[0]
    lengths = jnp.full((batch,), time, jnp.int32)
    ys, h_n, c_n = call(jnp.swapaxes(xs_TB, 0, 1), carry[0][None], carry[1][None], to_cudnn_weights(params),
                        lengths, features, hidden)
    return LSTMCarry(h_n[0], c_n[0]), jnp.swapaxes(ys, 0, 1)


def cudnn_available() -> bool:
    """Whether this JAX lowers `jax.experimental.rnn.lstm` (built with CUDA) and its default backend is the GPU."""
    try:
        from jax.experimental import rnn
    except ImportError:
        return False
    return getattr(rnn, "gpu_rnn", None) is not None and jax.default_backend() == "gpu"


def cudnn_lstm(cell: Cell) -> Cell:
    """`cell` (an `sj.lstm` with the default tanh / sigmoid activations) whose `scan` runs cuDNN's LSTM
    where it can (`cudnn_available()`, float32, no `mask` / `reset` / recurrent dropout) and the cell's own
    path elsewhere. Params, carry, `step` and `rollout` are the cell's."""
    check_cell(cell, _WHERE)
    if cell.name != "lstm":
        raise TypeError(f"{_WHERE}: cell must be an sj.lstm cell; got a {cell.name!r} cell")
    for argument, wanted in (("activation", jnp.tanh), ("recurrent_activation", jax.nn.sigmoid)):
        value = cell.config.get(argument)
        if value is None or resolve_activation(value, _WHERE, argument) is not wanted:
            raise ValueError(f"{_WHERE}: cuDNN's LSTM has {wanted.__name__} as its {argument}; this cell has "
                             f"{value!r}")
    if cell.config.get("matmul_dtype") is not None:
        raise ValueError(f"{_WHERE}: cuDNN's LSTM runs float32 matmuls; this cell has "
                         f"matmul_dtype={cell.config['matmul_dtype']}")
    own = functools.partial(run_sequence, cell)

    def sequence(params, carry, xs_TB, *, mask_TB=None, reset_TB=None, noise=None, unroll=1,
                 masked_output="previous"):
        arrays = [params["w_x"], params["w_h"], params["b"], *carry, xs_TB]
        if (mask_TB is not None or reset_TB is not None or (noise is not None and "h" in noise)
                or {jnp.result_type(a) for a in arrays} != {jnp.dtype(jnp.float32)} or not cudnn_available()):
            return own(params, carry, xs_TB, mask_TB=mask_TB, reset_TB=reset_TB, noise=noise, unroll=unroll,
                       masked_output=masked_output)
        inputs = xs_TB * noise["x"] if noise is not None and "x" in noise else xs_TB  # as the step applies it
        return layer_sequence(params, carry, inputs, cudnn_call)

    if getattr(cell.sequence, "closed_loop", None) is not None:
        sequence.closed_loop = cell.sequence.closed_loop  # `rollout` of a chain with a dense head: the cell's
    return cell._replace(sequence=sequence)
