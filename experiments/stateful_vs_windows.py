"""Stateful chunks vs overlapping windows on one long series: long-range accuracy and training cost.

    python -m experiments.stateful_vs_windows [--lengths 8 16 32] [--updates 2000] [--quick]

Both seeds' central question. One long series (`make_series`: a slow cycle of period 60 steps plus a fast
one of period 11, observed with noise σ = 0.3, 4,000 training steps then 600 test steps) is learned by the
same model, `sj.chain(sj.lstm(H), sj.dense(1))`, next-step MSE, Adam, in two ways for each length L:
  - windows (stateless, Keras's `stateful=False`): every overlapping window of L + 1 steps
    (`seqjax.data.windows`, stride 1), each an independent sequence from a zero state, shuffled batches;
  - stateful chunks (Keras's `stateful=True`, `shuffle=False`): the series cut into aligned, non-overlapping
    chunks of L steps (`seqjax.data.stateful_pairs`, 8 streams), the carry passed from chunk to chunk
    (`seqjax.train.fit` on `StatefulPairs`: truncated BPTT, reset at each epoch start).
The slow cycle is longer than every window: a window model sees at most L noisy steps, while the stateful
model's carry has seen the whole history. Test metrics on the 600 held-out steps:
  - one-step RMSE: windows model on the last L observed steps; stateful model continuing its carry;
  - closed-loop RMSE of 120-step forecasts from 5 origins in the test part (the first is the end of the
    training part) against the noise-free signal (windows: the last L observed values slide along as
    predictions are appended, one compiled `lax.scan`; stateful: `sj.forecast` after a 2,000-step warm-up);
and the cost. Both get the same number of optimizer updates (`--updates`, rounded up to whole epochs); the
cost is the time steps processed per epoch and the training seconds (median epoch time after compilation
times the epochs).
The noise floor of the one-step RMSE is σ = 0.3; predicting the mean gives about 0.87.

Writes results/stateful_vs_windows/{metrics.json, config.json, accuracy_vs_length.png, forecast.png}.
"""

from __future__ import annotations

import numpy as np

from experiments import common

NOISE = 0.3
TRAIN_STEPS, TEST_STEPS, FORECAST_STEPS, STREAMS = 4000, 600, 120, 8
ORIGINS = tuple(range(TRAIN_STEPS, TRAIN_STEPS + TEST_STEPS - FORECAST_STEPS + 1, FORECAST_STEPS))  # 5 origins
CONTEXT = 2000  # warm-up steps of the stateful model before each closed-loop forecast


def make_series(steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`(observed [steps], clean [steps])`: clean = sin(2πt/60) + 0.6 sin(2πt/11 + 1), observed = clean + σ ε."""
    t = np.arange(steps)
    clean = np.sin(2 * np.pi * t / 60) + 0.6 * np.sin(2 * np.pi * t / 11 + 1.0)
    noise = NOISE * np.random.default_rng(seed).standard_normal(steps)
    return (clean + noise).astype(np.float32), clean.astype(np.float32)


def main(argv=None) -> dict:
    import jax
    import jax.numpy as jnp
    import optax
    from jax import lax

    import seqjax as sj
    from seqjax import data, losses, train

    p = common.parser(__doc__)
    p.add_argument("--lengths", type=int, nargs="+", default=None,
                   help="window / chunk lengths L compared (default 8 16 32; quick 8)")
    p.add_argument("--hidden", type=int, default=None, help="LSTM units (default 32; quick 8)")
    p.add_argument("--updates", type=int, default=None,
                   help="optimizer updates of each run, rounded up to whole epochs (default 2000; quick 40)")
    p.add_argument("--batch", type=int, default=128, help="windows per minibatch (stateless runs)")
    p.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate")
    args = common.parse(p, argv, default={"lengths": [8, 16, 32], "hidden": 32, "updates": 2000},
                        quick={"lengths": [8], "hidden": 8, "updates": 40})
    run = common.Run("stateful_vs_windows", args)

    observed, clean = make_series(TRAIN_STEPS + TEST_STEPS, args.seed)
    train_part = observed[:TRAIN_STEPS, None]
    model = sj.chain(sj.lstm(args.hidden), sj.dense(1))
    obj = train.objective(model, losses.mse)
    predict_all = jax.jit(lambda p, c, x: sj.scan(model, p, c, x))

    def seconds_per_epoch(history):
        later = [h["seconds"] for h in history[1:]] or [history[0]["seconds"]]
        return float(np.median(later))  # epoch 0 includes compilation

    results, curves = {}, {}
    for length in args.lengths:
        # ---- stateless: overlapping windows of L + 1 steps -> next-step pairs, zero state per window
        w = data.windows(train_part, length + 1)
        x_win, y_win = data.next_step_pairs(w)
        print(f"L={length}: windows {x_win.shape} [samples, time_steps, features]; ", end="")
        params0 = jax.jit(model.init, static_argnums=1)(jax.random.key(args.seed), 1)
        epochs_w = -(-args.updates // -(-len(x_win) // args.batch))
        fit_w = train.fit(obj, optax.adam(args.lr), params0, (x_win, y_win), epochs=epochs_w,
                          batch_size=args.batch, seed=args.seed, progress=False)
        # ---- stateful: aligned chunks of L steps, carry passed on
        chunks = data.stateful_pairs(train_part, STREAMS, length)
        print(f"stateful chunks {chunks.xs.shape} [chunks, streams, time_steps, features]")
        epochs_s = -(-args.updates // len(chunks.xs))
        fit_s = train.fit(obj, optax.adam(args.lr), params0, chunks, epochs=epochs_s, seed=args.seed,
                          progress=False)

        # one-step-ahead on the test part
        test_windows = data.windows(observed[:, None], length, start=TRAIN_STEPS - length, end=len(observed) - 1)
        pw = fit_w.state.params
        _, ys_w = predict_all(pw, model.initial_carry(len(test_windows)), jnp.asarray(test_windows))
        onestep_w = np.asarray(ys_w[:, -1, 0])
        ps = fit_s.state.params
        _, ys_all = predict_all(ps, model.initial_carry(1), jnp.asarray(observed[None, :-1, None]))
        onestep_s = np.asarray(ys_all[0, TRAIN_STEPS - 1:, 0])
        target = observed[TRAIN_STEPS:]

        # closed loop from several origins in the test part (the first is the end of the training part)
        def window_loop(params, last_BLF):
            def body(buf, _):
                y = sj.scan(model, params, model.initial_carry(buf.shape[0]), buf)[1][:, -1]
                return jnp.concatenate([buf[:, 1:], y[:, None]], axis=1), y[:, 0]
            return lax.scan(body, last_BLF, None, length=FORECAST_STEPS)[1].T  # [origins, steps]

        last_windows = np.stack([observed[o - length:o, None] for o in ORIGINS])
        contexts = np.stack([observed[o - CONTEXT:o, None] for o in ORIGINS])
        closed_w = np.asarray(jax.jit(window_loop)(pw, jnp.asarray(last_windows)))
        closed_s = np.asarray(jax.jit(lambda p, ctx: sj.forecast(model, p, model.initial_carry(len(ORIGINS)), ctx,
                                                                 FORECAST_STEPS)[1])(ps, jnp.asarray(contexts))[..., 0])
        truth_closed = np.stack([clean[o:o + FORECAST_STEPS] for o in ORIGINS])
        rmse = lambda a, b: float(np.sqrt(np.mean((a - b) ** 2)))  # noqa: E731
        results[f"L{length}"] = {
            "windows": {"onestep_rmse": rmse(onestep_w, target), "closed_loop_rmse": rmse(closed_w, truth_closed),
                        "steps_per_epoch": int(x_win.shape[0] * x_win.shape[1]),
                        "updates_per_epoch": int(-(-x_win.shape[0] // args.batch)),
                        "epochs": epochs_w, "train_seconds": epochs_w * seconds_per_epoch(fit_w.history)},
            "stateful": {"onestep_rmse": rmse(onestep_s, target), "closed_loop_rmse": rmse(closed_s, truth_closed),
                         "steps_per_epoch": int(np.prod(chunks.xs.shape[:3])),
                         "updates_per_epoch": int(chunks.xs.shape[0]),
                         "epochs": epochs_s, "train_seconds": epochs_s * seconds_per_epoch(fit_s.history)},
        }
        curves[length] = (closed_w[0], closed_s[0])

    lengths = args.lengths
    fig, (ax1, ax2, ax3) = common.figure(1, 3, width=14, height=3.8)
    for kind, color in (("windows", "C0"), ("stateful", "C3")):
        ax1.plot(lengths, [results[f"L{L}"][kind]["onestep_rmse"] for L in lengths], "o-", color=color, label=kind)
        ax2.plot(lengths, [results[f"L{L}"][kind]["closed_loop_rmse"] for L in lengths], "o-", color=color, label=kind)
        ax3.plot(lengths, [results[f"L{L}"][kind]["train_seconds"] for L in lengths], "o-", color=color, label=kind)
    ax1.axhline(NOISE, color="0.4", ls=":", label="noise floor σ")
    ax1.set(title="one-step RMSE on the test part", xlabel="window / chunk length L", ylabel="RMSE")
    ax2.set(title=f"{FORECAST_STEPS}-step closed-loop RMSE (5 origins)", xlabel="window / chunk length L",
            ylabel="RMSE")
    ax3.set(title=f"training time for {args.updates} updates", xlabel="window / chunk length L",
            ylabel="seconds (after compilation)")
    for ax in (ax1, ax2, ax3):
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(L) for L in lengths])
        ax.legend()
    run.save_figure(fig, "accuracy_vs_length.png")

    L = lengths[0]
    closed_w, closed_s = curves[L]
    fig, ax = common.figure(height=3.6)
    t_hist = np.arange(TRAIN_STEPS - 120, TRAIN_STEPS)
    t_fut = np.arange(TRAIN_STEPS, TRAIN_STEPS + FORECAST_STEPS)
    ax.plot(t_hist, observed[t_hist], color="0.6", lw=0.8, label="observed (noisy)")
    ax.plot(np.r_[t_hist, t_fut], clean[np.r_[t_hist, t_fut]], color="black", lw=1.5, label="clean signal")
    ax.plot(t_fut, closed_w, color="C0", ls="--", label=f"windows L={L} (closed loop)")
    ax.plot(t_fut, closed_s, color="C3", label=f"stateful chunks L={L} (closed loop)")
    ax.axvline(TRAIN_STEPS - 0.5, color="0.5", lw=0.8)
    ax.set(title=f"closed-loop forecast after the training part, L = {L}", xlabel="step", ylabel="value")
    ax.legend(fontsize=8, loc="lower left")
    run.save_figure(fig, "forecast.png")

    rows = [(f"L={L}", kind, r["onestep_rmse"], r["closed_loop_rmse"], r["steps_per_epoch"], r["epochs"],
             r["train_seconds"]) for L in lengths for kind, r in results[f"L{L}"].items()]
    metrics = {"lengths": results, "noise_sigma": NOISE,
               "mean_predictor_rmse": float(np.sqrt(np.mean((observed[TRAIN_STEPS:] - train_part.mean()) ** 2)))}
    return run.finish(metrics, rows, ("length", "training", "1-step RMSE", "closed RMSE", "steps/epoch",
                                      "epochs", "train s"))


if __name__ == "__main__":
    main()
