"""The main job: forecast five years of monthly Mauna Loa CO2 with stacked LSTMs (the mean of ten), against baselines.

    python -m experiments.forecast            # defaults: under a minute on a 2-core CPU
    python -m experiments.forecast --quick    # seconds (smoke test)

Data: the weekly Mauna Loa CO2 record shipped in `experiments/datasets/mauna_loa_co2/` (public domain,
Scripps / CDIAC), averaged into 526 calendar months, March 1958 - December 2001. The last `--horizon`
months (default 60: 1997-2001) are held out; everything before is the known part.

seqjax (the first seed's "warm up, then closed loop", from the public API only):
  1. model the month-to-month change d_t = y_t - y_(t-1) of the known part, standardised with
     `seqjax.data.fit_standard` fitted on the known part only;
  2. cut it into aligned stateful chunks (`seqjax.data.stateful_pairs`, next-step targets) and train
     `sj.chain(sj.lstm(H), sj.lstm(H), sj.dense(1))` with `seqjax.train.fit` (stateful epochs: the carry is
     passed from chunk to chunk, reset at every epoch start; truncated BPTT);
  3. warm up on the whole known part from a fresh carry and roll `--horizon` steps forward in one compiled
     closed loop (`sj.forecast`, each predicted change fed back as the next input); the level forecast is
     the last known value plus the cumulative predicted changes;
  4. do 2-3 for `--ensemble` members (default 10) that differ only in their seed (`--seed` s: members
     s*E .. s*E+E-1) and average their forecasts. One network's forecast depends strongly on its seed: its
     error comes mostly from the slope of the trend it extrapolates, and over ten seeds one network's MASE
     spans more than a factor of four (metrics.json: "members"); the mean of ten is far steadier. The
     members share one compiled train step and one compiled closed loop.

Baselines, fitted on the known part only (NumPy, float64):
  - persistence: the last known value at every step;
  - seasonal_naive: the value of the same month in the last known year (m = 12);
  - linear_ar: y_t = c + sum_k a_k y_(t-k) by least squares, order p in 1..36 chosen by AIC on the
    known part, iterated forward.

Metrics on the held-out horizon, in ppm: MAE, RMSE and MASE = MAE / (in-sample MAE of the seasonal-naive
forecast y_t = y_(t-12) over the known part), `seqjax.losses.mase` with m = 12. MASE below 1 beats the
in-sample seasonal-naive error; the ranking of methods is that of their MAE.

Writes results/forecast/{metrics.json, config.json, forecast.png, training.png}; metrics.json has
"methods": {name: {"mae", "rmse", "mase"}} for "seqjax" (the ensemble's mean forecast), "persistence",
"seasonal_naive", "linear_ar", and "members": {"seeds", "mae", "rmse", "mase"} (lists, one per member).
"""

from __future__ import annotations

import numpy as np

from experiments import common

PERIOD = 12  # months per seasonal cycle: seasonal naive and the MASE scale


def load_co2_monthly() -> tuple[np.ndarray, np.ndarray]:
    """Monthly means of the shipped weekly record: `(time [526] decimal years, co2 [526] ppm)`, March 1958 -
    December 2001; months without a valid week (5) are filled by linear interpolation."""
    raw = np.genfromtxt(common.dataset("mauna_loa_co2/co2.csv"), delimiter=",", skip_header=1)
    yyyymm = (raw[:, 0] // 100).astype(int)
    months = np.arange(195803, 200113)
    months = months[(months % 100 >= 1) & (months % 100 <= 12)]
    values = np.full(len(months), np.nan)
    for i, month in enumerate(months):
        week = raw[yyyymm == month, 1]
        week = week[np.isfinite(week)]
        if week.size:
            values[i] = week.mean()
    index = np.arange(len(months))
    missing = np.isnan(values)
    values[missing] = np.interp(index[missing], index[~missing], values[~missing])
    time = months // 100 + (months % 100 - 0.5) / 12.0
    return time.astype(np.float64), values


def persistence(known: np.ndarray, horizon: int) -> np.ndarray:
    """The last known value at every step `[horizon]`."""
    return np.full(horizon, known[-1])


def seasonal_naive(known: np.ndarray, horizon: int, period: int = PERIOD) -> np.ndarray:
    """`y_(n+h) = y_(n+h-period·k)`: the last known cycle repeated `[horizon]`."""
    last_cycle = known[-period:]
    return last_cycle[np.arange(horizon) % period]


def fit_linear_ar(known: np.ndarray, max_order: int = 36) -> tuple[np.ndarray, int]:
    """Least-squares AR(p) with intercept; p in 1..max_order minimising AIC on a common sample.

    Returns `(coef [p + 1], p)` with `coef[0]` the intercept and `coef[k]` the weight of `y_(t-k)`.
    """
    n = len(known)
    best = None
    for p in range(1, max_order + 1):
        rows = np.arange(max_order, n)  # the same targets for every order, so the AICs compare
        x = np.column_stack([np.ones(len(rows))] + [known[rows - k] for k in range(1, p + 1)])
        coef, *_ = np.linalg.lstsq(x, known[rows], rcond=None)
        rss = float(np.sum((x @ coef - known[rows]) ** 2))
        aic = len(rows) * np.log(rss / len(rows)) + 2 * (p + 1)
        if best is None or aic < best[0]:
            best = (aic, coef, p)
    return best[1], best[2]


def linear_ar(known: np.ndarray, horizon: int, coef: np.ndarray) -> np.ndarray:
    """Iterate the fitted AR forward `horizon` steps from the end of `known`."""
    p = len(coef) - 1
    history = list(known[-p:])
    out = []
    for _ in range(horizon):
        y = coef[0] + sum(coef[k] * history[-k] for k in range(1, p + 1))
        history.append(y)
        out.append(y)
    return np.asarray(out)


def _metrics(p, t, k):
    from seqjax import losses

    return {"mae": losses.mae(p, t), "rmse": losses.rmse(p, t), "mase": losses.mase(p, t, k, m=PERIOD)}


def scores(pred: np.ndarray, truth: np.ndarray, known: np.ndarray) -> dict:
    """MAE, RMSE and MASE (m = 12) of `pred` against `truth`: `seqjax.losses` metrics, float32, one compile."""
    import jax

    global _metrics_jit
    if _metrics_jit is None:
        _metrics_jit = jax.jit(_metrics)
    p, t, k = (np.asarray(a, np.float32) for a in (pred, truth, known))
    return {name: float(v) for name, v in _metrics_jit(p, t, k).items()}


_metrics_jit = None


def train_seqjax(known: np.ndarray, horizon: int, args) -> tuple[np.ndarray, dict]:
    """Train `args.ensemble` stacked LSTMs on the known part's standardised changes, one per seed.

    Returns `(forecasts [members, horizon], histories {seed: per-epoch losses})`.
    """
    import jax
    import jax.numpy as jnp
    import optax

    import seqjax as sj
    from seqjax import data, losses, train

    change = np.diff(known).astype(np.float32)[:, None]  # [n - 1, 1]: d_t = y_t - y_(t-1)
    scaler = data.fit_standard(change)
    z = scaler.transform(change).astype(np.float32)
    chunks = data.stateful_pairs(z, batch_size=args.streams, chunk_length=args.chunk)
    print(f"known part: {len(known)} months -> {len(change)} changes; stateful chunks xs {chunks.xs.shape} "
          f"[chunks, streams, steps, features]")

    model = sj.chain(sj.lstm(args.hidden), sj.lstm(args.hidden), sj.dense(1))
    init = jax.jit(model.init, static_argnums=1)  # one compile for every member
    schedule = optax.cosine_decay_schedule(args.lr, args.epochs * len(chunks.xs), alpha=0.05)
    optimizer = optax.adam(schedule)
    objective = train.objective(model, losses.mse)  # the same objects: the members share the compiled step

    @jax.jit
    def closed_loop(params, context):
        return sj.forecast(model, params, model.initial_carry(1), context, horizon)[1]

    forecasts, histories = [], {}
    for seed in member_seeds(args.seed, args.ensemble):
        params = init(jax.random.key(seed), 1)
        result = train.fit(objective, optimizer, params, chunks, epochs=args.epochs, seed=seed, clip_norm=1.0,
                           progress=False)
        future = closed_loop(result.state.params, jnp.asarray(z[None]))  # [1, horizon, 1]
        change_pred = scaler.inverse(np.asarray(future[0], np.float64))[:, 0]
        forecasts.append(known[-1] + np.cumsum(change_pred))
        histories[seed] = [h["loss"] for h in result.history]
    return np.stack(forecasts), histories


def member_seeds(seed: int, members: int) -> list[int]:
    """The ensemble's seeds for `--seed seed`: `seed * members .. seed * members + members - 1` (so the
    members of two `--seed` values never overlap)."""
    return list(range(seed * members, (seed + 1) * members))


def main(argv=None) -> dict:
    p = common.parser(__doc__)
    p.add_argument("--horizon", type=int, default=60, help="held-out months forecast in closed loop (default 60)")
    p.add_argument("--hidden", type=int, default=None, help="LSTM units per layer (default 32; quick 8)")
    p.add_argument("--epochs", type=int, default=None, help="stateful epochs (default 300; quick 4)")
    p.add_argument("--chunk", type=int, default=12, help="steps per stateful chunk (truncated BPTT length)")
    p.add_argument("--streams", type=int, default=1,
                   help="rows the known part is cut into (each a stream continued chunk after chunk)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak Adam learning rate (cosine decay)")
    p.add_argument("--ensemble", type=int, default=None,
                   help="networks trained with different seeds, their forecasts averaged (default 10; quick 2)")
    args = common.parse(p, argv, default={"hidden": 32, "epochs": 300, "ensemble": 10},
                        quick={"hidden": 8, "epochs": 4, "ensemble": 2})
    if args.ensemble < 1:
        p.error(f"--ensemble must be at least 1; got {args.ensemble}")
    run = common.Run("forecast", args)

    time, co2 = load_co2_monthly()
    n = len(co2) - args.horizon
    known, truth = co2[:n], co2[n:]
    print(f"Mauna Loa CO2: {len(co2)} months {time[0]:.2f}-{time[-1]:.2f}; known {n}, held out {args.horizon}")

    coef, order = fit_linear_ar(known)
    forecasts = {
        "persistence": persistence(known, args.horizon),
        "seasonal_naive": seasonal_naive(known, args.horizon),
        "linear_ar": linear_ar(known, args.horizon, coef),
    }
    members, histories = train_seqjax(known, args.horizon, args)
    forecasts["seqjax"] = members.mean(axis=0)
    methods = {name: scores(f, truth, known) for name, f in forecasts.items()}
    member_scores = [scores(f, truth, known) for f in members]
    methods = {name: methods[name] for name in ("seqjax", "persistence", "seasonal_naive", "linear_ar")}

    fig, (ax_all, ax_zoom) = common.figure(2, 1, height=3.6)
    for ax, lo in ((ax_all, 0), (ax_zoom, n - 48)):
        ax.plot(time[lo:n], known[lo:], color="0.3", lw=1.2, label="history (known)")
        ax.plot(time[n:], truth, color="black", lw=2.0, label="truth (held out)")
        styles = {"seqjax": ("C3", "-", 2.0), "linear_ar": ("C0", "--", 1.4),
                  "seasonal_naive": ("C2", ":", 1.6), "persistence": ("C1", "-.", 1.4)}
        for i, member in enumerate(members):
            ax.plot(time[n:], member, color="C3", lw=0.6, alpha=0.3,
                    label=f"seqjax members ({len(members)} seeds)" if i == 0 else None)
        for name, (color, ls, lw) in styles.items():
            label = {"linear_ar": f"linear_ar, p={order}", "seqjax": f"seqjax, mean of {len(members)}"}.get(
                name, name) + f" (MASE {methods[name]['mase']:.2f})"
            ax.plot(time[n:], forecasts[name], color=color, ls=ls, lw=lw, label=label)
        ax.axvline(time[n] - 1 / 24, color="0.5", lw=0.8)
        ax.set_ylabel("CO2 (ppm)")
    ax_all.set_title(f"Mauna Loa CO2: {args.horizon}-month closed-loop forecast after warm-up on {n} known months")
    ax_zoom.set_title("last 4 known years and the held-out horizon")
    ax_zoom.set_xlabel("year")
    ax_zoom.legend(loc="upper left", fontsize=8)
    run.save_figure(fig, "forecast.png")

    fig, ax = common.figure(height=3.2)
    for i, losses_per_epoch in enumerate(histories.values()):
        ax.plot(np.arange(1, len(losses_per_epoch) + 1), losses_per_epoch, color="C3", lw=0.8, alpha=0.5,
                label="one line per member" if i == 0 else None)
    ax.set_yscale("log")
    ax.legend(loc="upper right", fontsize=8)
    ax.set(title="stateful training: mean next-step MSE per epoch (standardised changes)", xlabel="epoch",
           ylabel="MSE")
    run.save_figure(fig, "training.png")

    metrics = {"methods": methods, "horizon": args.horizon, "known_months": n, "ar_order": order,
               "final_train_loss": float(np.mean([h[-1] for h in histories.values()])),
               "members": {"seeds": list(histories),
                           **{k: [m[k] for m in member_scores] for k in ("mae", "rmse", "mase")}},
               "seqjax_beats": {b: methods["seqjax"]["mase"] < methods[b]["mase"]
                                for b in ("persistence", "seasonal_naive", "linear_ar")}}
    mase = np.asarray(metrics["members"]["mase"])
    print(f"seqjax's {len(mase)} members alone: MASE {mase.min():.3g} to {mase.max():.3g} (median "
          f"{np.median(mase):.3g}); their mean forecast: {methods['seqjax']['mase']:.3g}")
    rows = [(name, m["mae"], m["rmse"], m["mase"]) for name, m in methods.items()]
    return run.finish(metrics, rows, ("method", "MAE ppm", "RMSE ppm", "MASE"))


if __name__ == "__main__":
    main()
