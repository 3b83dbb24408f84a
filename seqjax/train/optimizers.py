"""Keras's Adam as an optax transformation, so the seeds' `Adam(lr, beta_1, beta_2, epsilon, decay, amsgrad)`
runs unchanged.

Keras puts epsilon outside the bias correction (`alpha = lr sqrt(1 - b2^t) / (1 - b1^t)`,
`p -= alpha m / (sqrt(v) + eps)`), where `optax.adam` uses `m_hat / (sqrt(v_hat) + eps)`; its AMSGrad keeps
the maximum of the raw `v`; and Keras 2's `decay` is the inverse-time learning-rate decay
`lr / (1 + decay * iterations)`. `keras_adam` reproduces all three, so trajectories match Keras's.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class ScaleByKerasAdamState(NamedTuple):
    """`count` of updates so far, first and second moments `m`, `v`, and AMSGrad's running max `v_hat`
    (None without AMSGrad)."""

    count: jax.Array
    m: Any
    v: Any
    v_hat: Any


def scale_by_keras_adam(beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7,
                        amsgrad: bool = False) -> optax.GradientTransformation:
    """The Adam direction as Keras computes it (without the learning rate and its sign)."""

    def init(params):
        def zeros():
            return jax.tree.map(jnp.zeros_like, params)

        return ScaleByKerasAdamState(jnp.zeros((), jnp.int32), zeros(), zeros(), zeros() if amsgrad else None)

    def update(updates, state, params=None):
        del params
        count = state.count + 1
        t = count.astype(jnp.float32)
        m = jax.tree.map(lambda m, g: m + (g - m) * (1 - beta_1), state.m, updates)
        v = jax.tree.map(lambda v, g: v + (jnp.square(g) - v) * (1 - beta_2), state.v, updates)
        v_hat = jax.tree.map(jnp.maximum, state.v_hat, v) if amsgrad else None
        denom = v_hat if amsgrad else v
        correction = jnp.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        direction = jax.tree.map(lambda m, d: (correction * m / (jnp.sqrt(d) + epsilon)).astype(m.dtype), m, denom)
        return direction, ScaleByKerasAdamState(count, m, v, v_hat)

    return optax.GradientTransformation(init, update)


def keras_adam(learning_rate=0.001, beta_1: float = 0.9, beta_2: float = 0.999, epsilon=1e-7,
               decay: float = 0.0, amsgrad: bool = False) -> optax.GradientTransformation:
    """Keras's `Adam(lr, beta_1, beta_2, epsilon, decay, amsgrad)` as an optax optimizer.

    `learning_rate` is a float or an optax schedule of the update count; `decay > 0` divides it by
    `1 + decay * iterations` (Keras 2's `decay`, Keras 3's `InverseTimeDecay(lr, 1, decay)`); `epsilon=None`
    means Keras's default 1e-7.
    """
    where = "seqjax.train.keras_adam"
    epsilon = 1e-7 if epsilon is None else epsilon
    for name, value in (("beta_1", beta_1), ("beta_2", beta_2)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{where}: {name} must be in [0, 1); got {value!r}")
    if not decay >= 0.0:
        raise ValueError(f"{where}: decay must be >= 0; got {decay!r}")
    if not epsilon >= 0.0:
        raise ValueError(f"{where}: epsilon must be >= 0 (or None); got {epsilon!r}")
    def decayed(count):
        lr = learning_rate(count) if callable(learning_rate) else learning_rate
        return lr / (1.0 + decay * count)

    schedule = decayed if decay > 0.0 else learning_rate
    return optax.chain(scale_by_keras_adam(beta_1, beta_2, epsilon, amsgrad), optax.scale_by_learning_rate(schedule))
