"""seqjax's side of each task, written the way the README teaches: `chain`, `scan`, `rollout`, optax.

On a CUDA GPU the LSTM forward and train rows also time the opt-in cuDNN path
(`seqjax.fast.cudnn.cudnn_lstm`) as `seqjax_cudnn`, beside the default path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import seqjax as sj
from seqjax.fast import cudnn
from benchmarks.problems import LEARNING_RATE, Problem, adam_step
from benchmarks.report import CUDNN
from benchmarks.timing import Contender


def layer_cell(problem: Problem, **options):
    """The problem's recurrent layer, `sj.lstm` or `sj.gru` of its hidden size (`options`: their keywords)."""
    make = sj.lstm if problem.cell == "lstm" else sj.gru
    return make(problem.config.hidden, **options)


def model_cell(problem: Problem, layer=None):
    """The recurrent layer (default `layer_cell`) followed by a per-step dense head back to the input size."""
    return sj.chain(layer or layer_cell(problem), sj.dense(problem.config.features))


def _params(problem: Problem):
    layer = {k: jnp.asarray(v) for k, v in problem.layer.items()}
    head = {k: jnp.asarray(v) for k, v in problem.head.items()}
    return layer, head


def mse_loss(model, params, xs, targets, remat=None):
    _, pred = sj.scan(model, params, model.initial_carry(xs.shape[0]), xs, remat=remat)
    return jnp.mean((pred - targets) ** 2)


def train_step_fn(model, optimizer, remat=None):
    """`step(params, opt_state, xs, targets) -> (params, opt_state, loss)`, jitted."""
    return adam_step(lambda p, xs, targets: mse_loss(model, p, xs, targets, remat), optimizer)


def forward(problem: Problem, layer=None, name: str = "seqjax") -> Contender:
    cell = layer or layer_cell(problem)
    layer, _ = _params(problem)
    xs = jnp.asarray(problem.xs)
    batch = problem.config.batch
    fn = jax.jit(lambda params, xs: sj.scan(cell, params, cell.initial_carry(batch), xs)[1])
    return Contender(name, lambda: fn(layer, xs), lambda: {"ys": np.asarray(fn(layer, xs))},
                     "jit(sj.scan(cell))")


def train(problem: Problem, layer=None, name: str = "seqjax") -> Contender:
    model = model_cell(problem, layer)
    params = _params(problem)
    xs, targets = jnp.asarray(problem.xs), jnp.asarray(problem.targets)
    optimizer = optax.adam(LEARNING_RATE)
    opt_state = optimizer.init(params)
    step = train_step_fn(model, optimizer)
    grad_fn = jax.jit(jax.value_and_grad(lambda p: mse_loss(model, p, xs, targets)))

    def result():
        loss, (g_layer, g_head) = grad_fn(params)
        out = {"loss": np.asarray(loss)}
        out.update({f"layer.{k}": np.asarray(v) for k, v in g_layer.items()})
        out.update({f"head.{k}": np.asarray(v) for k, v in g_head.items()})
        return out

    return Contender(name, lambda: step(params, opt_state, xs, targets), result,
                     "jit(value_and_grad(mse(sj.scan(chain(cell, dense)))) + optax.adam)")


def rollout(problem: Problem, layer=None, name: str = "seqjax") -> Contender:
    model = model_cell(problem, layer)
    params = _params(problem)
    context = jnp.asarray(problem.context)
    steps = problem.closed_loop

    @jax.jit
    def predict(params, context):
        carry, ys = sj.scan(model, params, model.initial_carry(context.shape[0]), context)
        _, future = sj.rollout(model, params, carry, ys[:, -1], steps)
        return future

    return Contender(name, lambda: predict(params, context),
                     lambda: {"future": np.asarray(predict(params, context))},
                     "jit(sj.scan warm-up + sj.rollout)")


BUILDERS = {"forward": forward, "train": train, "rollout": rollout}


def cudnn_contenders(problem: Problem, task: str) -> list[Contender]:
    """The cuDNN path's contender for an LSTM forward or train row on a CUDA GPU; none elsewhere."""
    if problem.cell != "lstm" or task not in ("forward", "train") or not cudnn.cudnn_available():
        return []
    return [BUILDERS[task](problem, cudnn.cudnn_lstm(layer_cell(problem)), CUDNN)]
