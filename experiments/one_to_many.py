"""One-to-many: a whole sequence from one vector, by repeat vector and by output feedback, compared.

    python -m experiments.one_to_many [--steps 40] [--epochs 60] [--quick]

Task: from a damped pendulum's initial state x0 = (angle, angular velocity) `[B, 2]`, generate its next
`--steps` states `[B, steps, 2]` (simulated with `simulate_pendulum`: θ'' = -sin θ - 0.15 θ', a small
Runge-Kutta step per frame). The first seed's two ways, each from a fresh (zero) state:
  - repeat vector (`sj.models.one_to_many_repeat`): `sj.repeat(x0, steps)` -> LSTM -> per-step dense; the
    model sees the same vector at every step and must keep time itself;
  - output feedback (`sj.models.one_to_many_feedback`): LSTM -> dense in closed loop, `ys[:, 0] =
    step(x0)` and each output is the next input (one compiled `sj.rollout`, Keras's `stateful=True`
    predict loop); it learns a step of the dynamics and iterates it.
Both are trained end to end on their generated sequence (MSE, `seqjax.train.fit` with a
`stateless_objective`) with the same hidden size, optimizer and epochs. Baseline: the initial state
held constant.

Writes results/one_to_many/{metrics.json, config.json, trajectories.png, error_by_step.png, training.png}.
"""

from __future__ import annotations

import numpy as np

from experiments import common

DT = 0.25  # seconds per generated frame


def simulate_pendulum(x0_N2: np.ndarray, steps: int) -> np.ndarray:
    """States after each of `steps` frames of `DT` seconds `[N, steps, 2]` (θ, ω) from `x0 [N, 2]`, RK4 with
    4 substeps per frame of θ' = ω, ω' = -sin θ - 0.15 ω."""
    def f(s):
        return np.stack([s[:, 1], -np.sin(s[:, 0]) - 0.15 * s[:, 1]], axis=1)

    s, h, out = x0_N2.astype(np.float64), DT / 4, []
    for _ in range(steps):
        for _ in range(4):
            k1 = f(s)
            k2 = f(s + h / 2 * k1)
            k3 = f(s + h / 2 * k2)
            k4 = f(s + h * k3)
            s = s + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(s)
    return np.stack(out, axis=1)


def errors(pred_NTF: np.ndarray, truth_NTF: np.ndarray) -> dict:
    """MSE over the whole generated sequence, its first quarter of steps and its last quarter."""
    quarter = max(1, truth_NTF.shape[1] // 4)
    sq = (pred_NTF - truth_NTF) ** 2
    return {"mse": float(sq.mean()), "mse_first_quarter": float(sq[:, :quarter].mean()),
            "mse_last_quarter": float(sq[:, -quarter:].mean())}


def main(argv=None) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    from seqjax import losses, models, train

    p = common.parser(__doc__)
    p.add_argument("--steps", type=int, default=None, help="generated frames per sequence (default 40; quick 12)")
    p.add_argument("--train", type=int, default=None, help="training sequences (default 1024; quick 128)")
    p.add_argument("--hidden", type=int, default=None, help="LSTM units (default 64; quick 8)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of each model (default 60; quick 6)")
    p.add_argument("--batch", type=int, default=64, help="sequences per minibatch")
    p.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate (cosine decay)")
    args = common.parse(p, argv, default={"steps": 40, "train": 1024, "hidden": 64, "epochs": 60},
                        quick={"steps": 12, "train": 128, "hidden": 8, "epochs": 6})
    run = common.Run("one_to_many", args)

    rng = np.random.default_rng(args.seed)
    num_test = max(64, args.train // 4)
    x0 = np.column_stack([rng.uniform(-2.5, 2.5, args.train + num_test),
                          rng.uniform(-1.5, 1.5, args.train + num_test)])
    seq = simulate_pendulum(x0, args.steps)
    x0, seq = x0.astype(np.float32), seq.astype(np.float32)
    (x_train, x_test), (y_train, y_test) = np.split(x0, [args.train]), np.split(seq, [args.train])
    print(f"initial states [samples, features] {x_train.shape} -> sequences [samples, time_steps, features] "
          f"{y_train.shape}")

    builders = {
        "repeat_vector": models.one_to_many_repeat(2, args.hidden, 2, args.steps),
        "output_feedback": models.one_to_many_feedback(2, args.hidden, args.steps),
    }
    steps_per_epoch = -(-args.train // args.batch)
    results, histories, generated = {}, {}, {}
    for k, (name, model) in enumerate(builders.items()):
        def loss_fn(params, batch, key, model=model):
            return losses.mse(model.apply(params, batch.inputs), batch.targets, batch.mask), {}

        optimizer = optax.adam(optax.cosine_decay_schedule(args.lr, args.epochs * steps_per_epoch, alpha=0.05))
        params = jax.jit(model.init)(jax.random.key(args.seed))
        fit = train.fit(train.stateless_objective(loss_fn, name=name), optimizer, params, (x_train, y_train),
                        val=(x_test, y_test), epochs=args.epochs, batch_size=args.batch, seed=args.seed,
                        clip_norm=1.0, progress=False)
        out = np.asarray(jax.jit(model.apply)(fit.state.params, jnp.asarray(x_test)))
        generated[name], histories[name] = out, fit.history
        results[name] = errors(out, y_test)
        print(f"{name}: generated {out.shape}, test MSE {results[name]['mse']:.4f}")
    hold = np.repeat(x_test[:, None], args.steps, axis=1)
    results["constant_baseline"] = errors(hold, y_test)

    colors = {"repeat_vector": "C0", "output_feedback": "C3"}
    fig, axes = common.figure(1, 3, width=13, height=4.0)
    for ax, i in zip(axes, range(3)):
        path = lambda seq_T2: np.vstack([x_test[i], seq_T2])  # noqa: E731  start the curves at x0
        ax.plot(*path(y_test[i]).T, color="black", lw=2, label="truth")
        for name, out in generated.items():
            ax.plot(*path(out[i]).T, color=colors[name], lw=1.3, ls="--", label=name.replace("_", " "))
        ax.plot(*x_test[i], "ko", ms=6, label="given vector x0")
        ax.set(title=f"test sequence {i}: phase portrait", xlabel="angle θ (rad)", ylabel="angular velocity ω")
    axes[0].legend(fontsize=8)
    run.save_figure(fig, "trajectories.png")

    fig, ax = common.figure(height=3.6)
    t = np.arange(1, args.steps + 1) * DT
    for name, out in generated.items():
        ax.plot(t, np.mean((out - y_test) ** 2, axis=(0, 2)), color=colors[name], label=name.replace("_", " "))
    ax.plot(t, np.mean((hold - y_test) ** 2, axis=(0, 2)), color="0.5", ls=":", label="constant x0 (baseline)")
    ax.set(title="test MSE at each generated step", xlabel="time after x0 (s)", ylabel="MSE", yscale="log")
    ax.legend()
    run.save_figure(fig, "error_by_step.png")

    fig, ax = common.figure(height=3.4)
    for name, history in histories.items():
        ax.plot([h["loss"] for h in history], color=colors[name], label=f"{name.replace('_', ' ')} train")
        ax.plot([h["val_loss"] for h in history], color=colors[name], ls="--", label=f"{name.replace('_', ' ')} test")
    ax.set(title="training: MSE of the whole generated sequence", xlabel="epoch", ylabel="MSE", yscale="log")
    ax.legend()
    run.save_figure(fig, "training.png")

    rows = [(name.replace("_", " "), r["mse"], r["mse_first_quarter"], r["mse_last_quarter"])
            for name, r in results.items()]
    return run.finish({"methods": results, "steps": args.steps}, rows,
                      ("method (test)", "MSE", "MSE first 1/4", "MSE last 1/4"))


if __name__ == "__main__":
    main()
