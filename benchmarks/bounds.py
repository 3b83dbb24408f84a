"""Lower bounds: only the matmuls a recurrent layer cannot avoid, timed in the same rounds as the contenders.

Step `t` needs `h_(t-1)` before it can multiply by `w_h`, so a JAX loop runs one step's matmul after the
other; on XLA:CPU a loop body's operations also run one after another, and at medium sizes the matmul
itself runs on one core. A loop that does nothing but these matmuls therefore bounds what any
implementation written as a JAX loop can reach on this machine (the gates, the head, the outputs and
the optimiser all cost extra). PyTorch is not bound by it: its oneDNN LSTM spreads one step over
the cores. (XLA:CPU does run a loop body's operations on both cores when more than 8 are ready at once,
e.g. the batch split into 12 independent lanes; a whole LSTM step measured slower that way:
`python -m benchmarks.attempts --what lanes`.)

- forward: `T` steps of `z = [x_t, h] @ [w_x; w_h]`, `h = z[:, :H]` (no gates, nothing written out); as
  two matmuls `x_t w_x + h w_h` where seqjax's plan runs two because one measured slower
  (`seqjax.fast.plan.fuse_xh`).
- rollout: the same loop over the warm-up's context, then the closed-loop steps with zero inputs (the
  head is left out: it can be folded into `w_h`).
- train: that forward loop, a reverse loop of `T` steps `dh = dz @ w_h^T` (`dz` = `dh` tiled over the
  gates), and the weight gradient as one `[F + H, T B] @ [T B, nH]` matmul over prepared arrays (no
  fresh memory, no Adam).

`fastest peer / bound` is then the largest speedup over that peer a JAX loop can show here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.problems import Problem
from benchmarks.timing import Contender
from seqjax.fast.plan import fuse_xh

NAME = "bound"


def _matmul_loop(w_xh, problem: Problem):
    """`scan` body: one `[x_t, h] @ w_xh` per step (or `x_t w_x + h w_h`, as seqjax's plan would), its
    first `hidden` columns as the next `h`."""
    c = problem.config
    fused = fuse_xh(c.batch, c.features, c.hidden, problem.cell)
    w_x, w_h = w_xh[:c.features], w_xh[c.features:]  # sliced once, outside the loop

    def body(h, x_t):
        z = jnp.concatenate([x_t, h], axis=-1) @ w_xh if fused else x_t @ w_x + h @ w_h
        return z[:, :c.hidden], None

    return body


def _weights(problem: Problem):
    w_xh = jnp.asarray(np.concatenate([problem.layer["w_x"], problem.layer["w_h"]], axis=0))
    return w_xh, problem.config.hidden


def _matmul_loop_contender(problem: Problem, xs_TB, how: str) -> Contender:
    w_xh, hidden = _weights(problem)
    h0 = jnp.zeros((problem.config.batch, hidden), jnp.float32)
    fn = jax.jit(lambda w, h, xs: jax.lax.scan(_matmul_loop(w, problem), h, xs)[0])
    return Contender(NAME, lambda: fn(w_xh, h0, xs_TB), dict, how)


def forward(problem: Problem) -> Contender:
    xs_TB = jnp.asarray(np.swapaxes(problem.xs, 0, 1))
    return _matmul_loop_contender(problem, xs_TB, "lax.scan of [x_t, h] @ [w_x; w_h] only")


def rollout(problem: Problem) -> Contender:
    closed = np.zeros((problem.closed_loop,) + problem.context.shape[::2], np.float32)  # [steps, B, F]
    xs_TB = jnp.asarray(np.concatenate([np.swapaxes(problem.context, 0, 1), closed], axis=0))
    steps = xs_TB.shape[0]
    return _matmul_loop_contender(problem, xs_TB, f"lax.scan of [x_t, h] @ [w_x; w_h] only, {steps} steps")


def train(problem: Problem) -> Contender:
    w_xh, hidden = _weights(problem)
    w_h = w_xh[problem.config.features:]
    blocks = w_h.shape[1] // hidden
    b, t = problem.config.batch, problem.config.time
    xs_TB = jnp.asarray(np.swapaxes(problem.xs, 0, 1))
    rng = np.random.default_rng(1)
    inputs = jnp.asarray(rng.standard_normal((w_xh.shape[0], t * b)).astype(np.float32))  # [F + H, T B]
    dz_all = jnp.asarray(rng.standard_normal((t * b, w_xh.shape[1])).astype(np.float32))  # [T B, nH]

    def back(dh, _):
        return jnp.tile(dh, (1, blocks)) @ w_h.T, None

    @jax.jit
    def fn(w_xh, xs_TB, inputs, dz_all):
        h = jax.lax.scan(_matmul_loop(w_xh, problem), jnp.zeros((b, hidden), jnp.float32), xs_TB)[0]
        dh = jax.lax.scan(back, h, None, length=t)[0]
        return dh, inputs @ dz_all

    return Contender(NAME, lambda: fn(w_xh, xs_TB, inputs, dz_all), dict,
                     "forward matmul loop + reverse dz @ w_h^T loop + one weight-gradient matmul")


BUILDERS = {"forward": forward, "train": train, "rollout": rollout}
