"""Online learning on hundreds of streams: 400 stocks arriving one step at a time, never reset.

    python -m experiments.online [--streams 400] [--steps 2000] [--quick]

Data (`simulate_prices`): the second seed's 400 stocks sharing one network, as generated prices: a random
walk whose log-returns switch between three hidden regimes per stock (Markov chain, switch probability
1 % per step) — trending up (mean +0.2 %, momentum φ = +0.6), trending down (-0.2 %, φ = +0.6) and choppy
(mean 0, φ = -0.4, higher volatility) — plus a market factor shared by all stocks:
`r_t = μ_k + φ_k (r_(t-1) - μ_k) + σ_k ε_t + 0.3 m_t`.

Learner (`seqjax.online`): `sj.chain(sj.lstm(32), sj.dense(1))`, one step per arriving observation for all
streams at once: from today's return (in percent) predict tomorrow's, report that prediction, then one
Adam update on its error and the carry moves on (`online.make_online_step`, compiled once; gradients are
truncated at the incoming carry). Nothing is ever reset or re-read: the carry of each stream holds its
history. Baseline: persistence (tomorrow's price = today's, i.e. a return of 0). Reference: an oracle
that knows every stock's current regime and its coefficients (the best a learner could approach).

Reported: the rolling RMSE of the one-step log-price forecast (in %) over the last `--window` steps, for
the learner and persistence, as it evolves; the headline is the ratio over the last 500 steps (below 1
beats persistence). Writes results/online/{metrics.json, config.json, prices.png, rolling_error.png}.
"""

from __future__ import annotations

import numpy as np

from experiments import common

MU = np.array([0.002, -0.002, 0.0])
PHI = np.array([0.6, 0.6, -0.4])
SIGMA = np.array([0.008, 0.008, 0.014])


def simulate_prices(streams: int, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(prices [steps + 1, S], returns [steps + 1, S], regimes [steps + 1, S])`: prices start at 100."""
    rng = np.random.default_rng(seed)
    regime = rng.integers(0, 3, streams)
    r = np.zeros(streams)
    returns, regimes = [r], [regime]
    for _ in range(steps):
        switch = rng.random(streams) < 0.01
        regime = np.where(switch, rng.integers(0, 3, streams), regime)
        market = 0.006 * rng.standard_normal()
        r = MU[regime] + PHI[regime] * (r - MU[regime]) + SIGMA[regime] * rng.standard_normal(streams) + 0.3 * market
        returns.append(r)
        regimes.append(regime)
    returns = np.stack(returns)
    return 100 * np.exp(np.cumsum(returns, axis=0)), returns, np.stack(regimes)


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` values at each step (fewer at the start) `[T]`."""
    c = np.cumsum(np.r_[0.0, x])
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def main(argv=None) -> dict:
    import jax
    import optax

    import seqjax as sj
    from seqjax import losses, online

    p = common.parser(__doc__)
    p.add_argument("--streams", type=int, default=None, help="stocks learned together (default 400; quick 64)")
    p.add_argument("--steps", type=int, default=None, help="observations per stream (default 3000; quick 500)")
    p.add_argument("--hidden", type=int, default=None, help="LSTM units (default 32; quick 8)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate of the online updates")
    p.add_argument("--window", type=int, default=None, help="rolling-error window in steps (default 100; quick 50)")
    args = common.parse(p, argv, default={"streams": 400, "steps": 3000, "hidden": 32, "window": 100},
                        quick={"streams": 64, "steps": 500, "hidden": 8, "window": 50})
    run = common.Run("online", args)

    prices, returns, regimes = simulate_prices(args.streams, args.steps, args.seed)
    pct = (100 * returns).astype(np.float32)  # returns in percent: a fixed scale, nothing fitted on the future
    model = sj.chain(sj.lstm(args.hidden), sj.dense(1))
    optimizer = optax.adam(args.lr)
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(args.seed), 1)
    learner = online.init_learner(model, params, optimizer, args.streams)
    step = online.make_online_step(model, losses.mse, optimizer, clip_norm=1.0)
    print(f"{args.streams} streams x {args.steps} steps; each step x_t {(args.streams, 1)} -> prediction "
          f"{(args.streams, 1)} [streams, features]")

    predictions = []
    for t in range(args.steps):
        learner, metrics = step(learner, pct[t][:, None], pct[t + 1][:, None])
        predictions.append(metrics.prediction[:, 0])  # made from x_t before r_(t+1) was seen
    pred_pct = np.asarray(jax.device_get(predictions))  # [steps, S]

    err_model = np.mean((pred_pct - pct[1:]) ** 2, axis=1)  # squared error of log-price forecasts, %^2
    err_persist = np.mean(pct[1:] ** 2, axis=1)
    k = regimes[:-1]  # a reference no learner can reach: the true regime and coefficients of every stock
    oracle_pct = 100 * (MU[k] + PHI[k] * (returns[:-1] - MU[k]))
    err_oracle = np.mean((oracle_pct - pct[1:]) ** 2, axis=1)
    roll_model = np.sqrt(rolling_mean(err_model, args.window))
    roll_persist = np.sqrt(rolling_mean(err_persist, args.window))
    roll_oracle = np.sqrt(rolling_mean(err_oracle, args.window))
    tail = min(500, args.steps)
    ratio_tail = float(np.sqrt(err_model[-tail:].mean() / err_persist[-tail:].mean()))
    head = min(500, args.steps)
    ratio_head = float(np.sqrt(err_model[:head].mean() / err_persist[:head].mean()))

    fig, ax = common.figure(height=3.8)
    t_axis = np.arange(args.steps + 1)
    for s in range(min(6, args.streams)):
        ax.plot(t_axis, prices[:, s], lw=0.9)
    ax.set(title=f"6 of the {args.streams} generated stocks (regime-switching random walks)", xlabel="step",
           ylabel="price", yscale="log")
    run.save_figure(fig, "prices.png")

    fig, (ax1, ax2) = common.figure(2, 1, height=3.0, sharex=True)
    steps_axis = np.arange(1, args.steps + 1)
    ax1.plot(steps_axis, roll_persist, color="0.4", label="persistence")
    ax1.plot(steps_axis, roll_model, color="C3", label="seqjax online LSTM")
    ax1.plot(steps_axis, roll_oracle, color="C2", ls="--", lw=1, label="oracle (knows each stock's regime)")
    ax1.set(title=f"rolling RMSE of the one-step log-price forecast, all {args.streams} streams "
                  f"(window {args.window})", ylabel="RMSE (%)")
    ax1.legend()
    ax2.plot(steps_axis, roll_model / roll_persist, color="C3", label="seqjax online LSTM")
    ax2.plot(steps_axis, roll_oracle / roll_persist, color="C2", ls="--", lw=1, label="oracle")
    ax2.legend()
    ax2.axhline(1.0, color="0.4", ls=":")
    ax2.set(xlabel="step (one online update per step, no resets)", ylabel="RMSE ratio vs persistence")
    run.save_figure(fig, "rolling_error.png")

    checkpoints = sorted({min(args.steps, k) for k in (args.window, args.steps // 4, args.steps // 2, args.steps)})
    metrics = {"rmse_ratio_last_500": ratio_tail, "rmse_ratio_first_500": ratio_head,
               "rmse_last_500": {"seqjax": float(np.sqrt(err_model[-tail:].mean())),
                                 "persistence": float(np.sqrt(err_persist[-tail:].mean())),
                                 "oracle": float(np.sqrt(err_oracle[-tail:].mean()))},
               "rolling": [{"step": int(k), "seqjax": float(roll_model[k - 1]),
                            "persistence": float(roll_persist[k - 1])} for k in checkpoints],
               "updates": int(learner.position)}
    rows = [(f"step {r['step']}", r["seqjax"], r["persistence"], r["seqjax"] / r["persistence"])
            for r in metrics["rolling"]]
    rows.append((f"last {tail} steps", metrics["rmse_last_500"]["seqjax"], metrics["rmse_last_500"]["persistence"],
                 ratio_tail))
    return run.finish(metrics, rows, ("rolling RMSE (%)", "seqjax", "persistence", "ratio"))


if __name__ == "__main__":
    main()
