"""What is benchmarked: sizes, tasks, and one shared set of weights and data per (config, cell).

Weights are drawn once in seqjax's layout (`w_x [F, nH]`, `w_h [H, nH]`, biases) and converted by each
peer module, so every framework runs exactly the same numbers.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

TASKS = ("forward", "train", "rollout")
CELLS = ("lstm", "gru")
WARMUP_STEPS = 100  # rollout: steps of context before the closed loop
CLOSED_LOOP_STEPS = 200  # rollout: closed-loop steps after the warm-up
LEARNING_RATE = 1e-3


class Config(NamedTuple):
    """One size: `batch` sequences of `time` steps of `features`, `hidden` units."""

    name: str
    batch: int
    time: int
    features: int
    hidden: int


CONFIGS = {
    "small": Config("small", 32, 50, 2, 32),
    "medium": Config("medium", 64, 100, 8, 128),
    "large": Config("large", 128, 200, 32, 256),
    "long": Config("long", 16, 2000, 8, 128),
    "many": Config("many", 1024, 50, 8, 128),
}
QUICK_CONFIGS = {"tiny": Config("tiny", 4, 12, 3, 8)}
# The speed issue's GPU goal: an LSTM train step against PyTorch's cuDNN LSTM at batch 256, T 200, H 512.
# Part of the default run where JAX's backend is a GPU; `--configs gpu` elsewhere.
GPU_CONFIGS = {"gpu": Config("gpu", 256, 200, 32, 512)}

# Tasks that measure something different per config: a rollout's length is fixed, so on `long` it
# would repeat `medium`.
SKIP = {("long", "rollout")}


class Problem(NamedTuple):
    """Weights (seqjax layout, NumPy float32) and data for one config and cell kind.

    `layer`: the recurrent layer's params; `head`: the per-step dense head `w [H, F]`, `b [F]`;
    `xs`/`targets` `[B, T, F]`; `context` `[B, WARMUP_STEPS, F]` (rollouts); `closed_loop` steps.
    """

    config: Config
    cell: str
    layer: dict
    head: dict
    xs: np.ndarray
    targets: np.ndarray
    context: np.ndarray
    closed_loop: int


def _uniform(rng, shape, scale):
    return rng.uniform(-scale, scale, size=shape).astype(np.float32)


def make_problem(config: Config, cell: str, seed: int = 0, *, warmup: int = WARMUP_STEPS,
                 closed_loop: int = CLOSED_LOOP_STEPS) -> Problem:
    """Random weights with non-zero biases (so a wrongly mapped bias shows) and random data."""
    if cell not in CELLS:
        raise ValueError(f"make_problem: cell must be one of {CELLS}; got {cell!r}")
    rng = np.random.default_rng(seed)
    b, t, f, h = config.batch, config.time, config.features, config.hidden
    n = 4 if cell == "lstm" else 3
    layer = {"w_x": _uniform(rng, (f, n * h), np.sqrt(6 / (f + n * h))),
             "w_h": _uniform(rng, (h, n * h), np.sqrt(1 / h))}
    if cell == "lstm":
        layer["b"] = _uniform(rng, (n * h,), 0.1)
    else:
        layer["b_x"] = _uniform(rng, (n * h,), 0.1)
        layer["b_h"] = _uniform(rng, (n * h,), 0.1)
    head = {"w": _uniform(rng, (h, f), np.sqrt(6 / (h + f))), "b": _uniform(rng, (f,), 0.1)}
    xs = rng.standard_normal((b, t, f)).astype(np.float32)
    targets = rng.standard_normal((b, t, f)).astype(np.float32)
    context = rng.standard_normal((b, warmup, f)).astype(np.float32)
    return Problem(config, cell, layer, head, xs, targets, context, closed_loop)


def forward_flops(config: Config, cell: str) -> float:
    """Multiply-add FLOPs of one forward pass of the recurrent layer (matmuls only)."""
    n = 4 if cell == "lstm" else 3
    return 2.0 * config.batch * config.time * (config.features + config.hidden) * n * config.hidden


def adam_step(loss_fn, optimizer):
    """The train task's update for the JAX contenders: `step(params, opt_state, *data) -> (params,
    opt_state, loss)`, jitted; `loss_fn(params, *data)` is the contender's MSE."""
    import jax
    import optax

    @jax.jit
    def step(params, opt_state, *data):
        loss, grads = jax.value_and_grad(loss_fn)(params, *data)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step
