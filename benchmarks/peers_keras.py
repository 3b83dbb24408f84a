"""Keras 3 peer on the JAX backend: `keras.layers.LSTM` / `GRU` (+ `Dense`), jitted stateless calls.

Uses Keras's documented JAX patterns, its fastest: `jax.jit(model.stateless_call)` for the forward
pass, `jax.value_and_grad` + `optimizer.stateless_apply` for the train step, and for the rollout the
layer's cell inside `jax.lax.scan` under a `StatelessScope` ("scan in a model"). Keras's GRU
(`reset_after=True`) and LSTM use seqjax's gate order; the GRU's two biases are one `[2, 3H]` array.
"""

from __future__ import annotations

import os

import numpy as np

from benchmarks.problems import LEARNING_RATE, Problem
from benchmarks.timing import Contender

NAME = "keras"


def available() -> bool:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except Exception:  # keras not installed, or a backend that cannot load
        return False
    return keras.backend.backend() == "jax"


def to_keras(problem: Problem) -> list:
    p = problem.layer
    if problem.cell == "lstm":
        return [p["w_x"], p["w_h"], p["b"]]
    return [p["w_x"], p["w_h"], np.stack([p["b_x"], p["b_h"]])]


def _layer(problem: Problem, **kwargs):
    import keras

    kind = keras.layers.LSTM if problem.cell == "lstm" else keras.layers.GRU
    return kind(problem.config.hidden, return_sequences=True, **kwargs)


def _built(problem: Problem, layers: list, time: int):
    """A Sequential model of `layers` built for `[B, time, F]`, with the problem's weights set."""
    import keras

    cfg = problem.config
    model = keras.Sequential([keras.Input((time, cfg.features), batch_size=cfg.batch)] + layers)
    layers[0].set_weights(to_keras(problem))
    if len(layers) > 1:
        layers[1].set_weights([problem.head["w"], problem.head["b"]])
    return model


def forward(problem: Problem) -> Contender:
    import jax
    import jax.numpy as jnp

    layer = _layer(problem)
    model = _built(problem, [layer], problem.config.time)
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    xs = jnp.asarray(problem.xs)
    fn = jax.jit(lambda tv, ntv, xs: model.stateless_call(tv, ntv, xs)[0])
    return Contender(NAME, lambda: fn(tv, ntv, xs), lambda: {"ys": np.asarray(fn(tv, ntv, xs))},
                     "jit(model.stateless_call)")


def train(problem: Problem) -> Contender:
    import jax
    import jax.numpy as jnp
    import keras

    layer = _layer(problem)
    head = keras.layers.Dense(problem.config.features)
    model = _built(problem, [layer, head], problem.config.time)
    optimizer = keras.optimizers.Adam(LEARNING_RATE, epsilon=1e-8)
    optimizer.build(model.trainable_variables)
    loss_obj = keras.losses.MeanSquaredError()
    xs, targets = jnp.asarray(problem.xs), jnp.asarray(problem.targets)

    def loss_fn(tv, ntv, xs, ys):
        pred, ntv = model.stateless_call(tv, ntv, xs, training=True)
        return loss_obj(ys, pred), ntv

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    @jax.jit
    def train_step(state, xs, ys):
        tv, ntv, ov = state
        (loss, ntv), grads = grad_fn(tv, ntv, xs, ys)
        tv, ov = optimizer.stateless_apply(ov, grads, tv)
        return loss, (tv, ntv, ov)

    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables])
    grads_jit = jax.jit(grad_fn)

    def result():
        (loss, _), grads = grads_jit(state[0], state[1], xs, targets)
        by_var = {v.path: np.asarray(g) for v, g in zip(model.trainable_variables, grads)}
        g = [by_var[w.path] for w in layer.trainable_weights]
        out = {"loss": np.asarray(loss)}
        if problem.cell == "lstm":
            out.update({"layer.w_x": g[0], "layer.w_h": g[1], "layer.b": g[2]})
        else:
            out.update({"layer.w_x": g[0], "layer.w_h": g[1], "layer.b_x": g[2][0], "layer.b_h": g[2][1]})
        out["head.w"], out["head.b"] = by_var[head.kernel.path], by_var[head.bias.path]
        return out

    return Contender(NAME, lambda: train_step(state, xs, targets), result,
                     "jit(value_and_grad(stateless_call) + optimizer.stateless_apply)")


def rollout(problem: Problem) -> Contender:
    import jax
    import jax.numpy as jnp
    import keras

    layer = _layer(problem, return_state=True)
    head = keras.layers.Dense(problem.config.features)
    model = _built(problem, [layer], problem.context.shape[1])
    head.build((None, problem.config.hidden))
    head.set_weights([problem.head["w"], problem.head["b"]])
    variables = list(model.variables) + list(head.variables)
    values = [v.value for v in variables]
    context = jnp.asarray(problem.context)
    steps, lstm = problem.closed_loop, problem.cell == "lstm"

    @jax.jit
    def predict(values, context):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            out = layer(context)
            states = list(out[1:])
            y = head(out[0][:, -1])

            def body(carry, _):
                states, y = carry
                h, states = layer.cell(y, states)
                y = head(h)
                return (list(states) if lstm else [states[0]] if isinstance(states, (list, tuple)) else
                        [states], y), y

            _, future = jax.lax.scan(body, (states, y), None, length=steps)
        return jnp.swapaxes(future, 0, 1)

    return Contender(NAME, lambda: predict(values, context),
                     lambda: {"future": np.asarray(predict(values, context))},
                     "jit(layer warm-up + lax.scan(layer.cell, Dense)) in a StatelessScope")


BUILDERS = {"forward": forward, "train": train, "rollout": rollout}
