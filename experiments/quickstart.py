"""Quickstart: train a small stacked LSTM on a generated noisy sine and watch the loss fall.

    python -m experiments.quickstart [--steps 300] [--seed 0]

Built only from the public API: `chain`, `scan`, `forecast`, `data.windows`, optax.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import seqjax as sj


def make_series(length: int, seed: int) -> np.ndarray:
    """A noisy two-period sine `[length, 1]` float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    y = np.sin(2 * np.pi * t / 25) + 0.5 * np.sin(2 * np.pi * t / 7) + 0.05 * rng.standard_normal(length)
    return y.astype(np.float32)[:, None]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps")
    parser.add_argument("--hidden", type=int, default=32, help="LSTM units per layer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    series = make_series(1200, args.seed)
    seqs = np.asarray(sj.data.windows(series, 51, stride=5))  # [N, 51, 1]
    xs, ys = jnp.asarray(seqs[:, :-1]), jnp.asarray(seqs[:, 1:])  # next-step pairs (the first seed's X, Y)
    print(f"windows {seqs.shape} -> inputs {xs.shape}, targets {ys.shape}  [samples, time_steps, features]")

    model = sj.chain(sj.lstm(args.hidden), sj.lstm(args.hidden), sj.dense(1))
    params = model.init(jax.random.key(args.seed), 1)
    optimizer = optax.adam(3e-3)
    opt_state = optimizer.init(params)

    def loss_fn(params, xs, ys):
        _, pred = sj.scan(model, params, model.initial_carry(xs.shape[0]), xs)
        return jnp.mean((pred - ys) ** 2)

    @jax.jit
    def train_step(params, opt_state, xs, ys):
        loss, grads = jax.value_and_grad(loss_fn)(params, xs, ys)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    history = []
    for step in range(1, args.steps + 1):
        params, opt_state, loss = train_step(params, opt_state, xs, ys)
        history.append(float(loss))
        if step == 1 or step % 50 == 0:
            print(f"step {step:4d}  mse {float(loss):.5f}")

    # warm up on 200 known steps, then predict the next 50 in one compiled closed loop
    context, truth = jnp.asarray(series[None, :200]), series[200:250, 0]
    _, future = jax.jit(lambda p, c: sj.forecast(model, p, model.initial_carry(1), c, 50))(params, context)
    forecast_mse = float(np.mean((np.asarray(future[0, :, 0]) - truth) ** 2))
    print(f"loss {history[0]:.4f} -> {history[-1]:.4f}; 50-step closed-loop forecast mse {forecast_mse:.4f}")
    return {"first_loss": history[0], "last_loss": history[-1], "forecast_mse": forecast_mse}


if __name__ == "__main__":
    main()
