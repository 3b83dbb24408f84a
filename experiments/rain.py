"""The second seed's three shifting schemes (a, b, c) for rain classification on real daily weather.

    python -m experiments.rain [--lags 7] [--epochs 40] [--quick]

Data: NOAA daily weather for Seattle, 2012-2015 (public domain; shipped in
`experiments/datasets/seattle_weather/`). Label of day t: rain (precipitation > 0), 43 % of days.
Features of day t: max and min temperature, wind, and the day of the year as (sin, cos), standardised on
the training part. Train on the days of 2012-2014, test on the 365 days of 2015.

The schemes (`seqjax.data.shift_features`, `shift_labels`, `shift_features_and_labels`, `lags` = L days):
  a) the features of the previous L days and of day t itself -> rain on day t (inputs `[N, L+1, 5]`);
  b) the rain labels of the previous L days -> rain on day t (`[N, L, 1]`): a next-day forecast;
  c) features and labels of the previous L days -> rain on day t (`[N, L, 6]`): a next-day forecast.
Each trains `sj.chain(sj.lstm(H), sj.dense(1))` many-to-one (the last step's logit, binary
cross-entropy via `seqjax.losses.last_step`) with `seqjax.train.fit`. Baselines: the training majority
class (no rain) and persistence (rain today iff it rained yesterday). Test samples look back into 2014
for their inputs but never at a label on or after their own day (except scheme a's features of day t).

Writes results/rain/{metrics.json, config.json, schemes.png, timeline.png}.
"""

from __future__ import annotations

import numpy as np

from experiments import common

SCHEMES = {"a_features": "a) features incl. day t", "b_labels": "b) previous labels",
           "c_features_labels": "c) previous features + labels"}


def load_weather() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`(years [T] int, features [T, 5] float64, rain [T] bool, precipitation [T] mm)` for the 1,461 days."""
    rows = np.genfromtxt(common.dataset("seattle_weather/seattle-weather.csv"), delimiter=",", skip_header=1,
                         dtype=None, encoding="utf-8")
    dates = np.array([r[0].replace("/", "-") for r in rows], dtype="datetime64[D]")
    precip = np.array([r[1] for r in rows], dtype=np.float64)
    day_of_year = (dates - dates.astype("datetime64[Y]")).astype(int)
    angle = 2 * np.pi * day_of_year / 365.25
    features = np.column_stack([[r[2] for r in rows], [r[3] for r in rows], [r[4] for r in rows],
                                np.sin(angle), np.cos(angle)]).astype(np.float64)
    years = dates.astype("datetime64[Y]").astype(int) + 1970
    return years, features, precip > 0, precip


def scores(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Accuracy and F1 (rain is the positive class) of bool predictions."""
    tp = int(np.sum(pred & truth))
    precision = tp / max(int(pred.sum()), 1)
    recall = tp / max(int(truth.sum()), 1)
    return {"accuracy": float(np.mean(pred == truth)),
            "f1": 2 * precision * recall / max(precision + recall, 1e-12),
            "precision": precision, "recall": recall}


def main(argv=None) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    import seqjax as sj
    from seqjax import data, losses, train

    p = common.parser(__doc__)
    p.add_argument("--lags", type=int, default=7, help="days of history L each sample sees (default 7)")
    p.add_argument("--hidden", type=int, default=None, help="LSTM units (default 32; quick 8)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs per scheme (default 40; quick 2)")
    p.add_argument("--batch", type=int, default=64, help="samples per minibatch")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    args = common.parse(p, argv, default={"hidden": 32, "epochs": 40}, quick={"hidden": 8, "epochs": 2})
    run = common.Run("rain", args)

    years, features, rain, precip = load_weather()
    first_test = int(np.argmax(years == 2015))
    scaler = data.fit_standard(features[:first_test])  # training days only
    feat = scaler.transform(features).astype(np.float32)
    labels = rain.astype(np.float32)
    print(f"Seattle daily weather: {len(rain)} days, features {feat.shape}, rain on {rain.mean():.0%} of days; "
          f"test = 2015 ({len(rain) - first_test} days)")

    builders = {"a_features": lambda: data.shift_features(feat, labels, args.lags),
                "b_labels": lambda: data.shift_labels(labels, args.lags),
                "c_features_labels": lambda: data.shift_features_and_labels(feat, labels, args.lags)}
    results, probs = {}, {}
    for k, (name, build) in enumerate(builders.items()):
        x, y = build()
        x, y = np.ascontiguousarray(x, np.float32), np.asarray(y, np.float32)[:, None]
        target_day = np.arange(len(y)) + args.lags
        is_train = target_day < first_test
        print(f"scheme {name}: inputs {x.shape} [samples, time_steps, features], targets {y.shape}")
        model = sj.chain(sj.lstm(args.hidden), sj.dense(1))
        obj = train.objective(model, losses.last_step(losses.binary_crossentropy))
        params = jax.jit(model.init, static_argnums=1)(jax.random.key(args.seed + k), x.shape[-1])
        fit = train.fit(obj, optax.adam(args.lr), params, (x[is_train], y[is_train]), epochs=args.epochs,
                        batch_size=args.batch, seed=args.seed, progress=False)
        logits = jax.jit(lambda p, x: sj.scan(model, p, model.initial_carry(x.shape[0]), x)[1][:, -1, 0])(
            fit.state.params, jnp.asarray(x[~is_train]))
        prob = np.asarray(jax.nn.sigmoid(logits))
        probs[name] = prob
        truth = y[~is_train, 0] > 0.5
        p_true = np.clip(np.where(truth, prob, 1 - prob), 1e-7, 1.0)
        results[name] = {**scores(prob > 0.5, truth), "test_bce": float(-np.mean(np.log(p_true))),
                         "train_bce_last_epoch": fit.history[-1]["loss"]}

    truth = rain[first_test:]
    results["majority"] = scores(np.full(len(truth), bool(rain[:first_test].mean() > 0.5)), truth)
    results["persistence"] = scores(rain[first_test - 1:-1], truth)

    names = list(results)
    fig, ax = common.figure(height=3.8)
    pos = np.arange(len(names))
    ax.bar(pos - 0.2, [results[n]["accuracy"] for n in names], 0.4, label="accuracy")
    ax.bar(pos + 0.2, [results[n]["f1"] for n in names], 0.4, label="F1 (rain)")
    for i, n in enumerate(names):
        for dx, key in ((-0.2, "accuracy"), (0.2, "f1")):
            ax.text(i + dx, results[n][key] + 0.01, f"{results[n][key]:.2f}", ha="center", fontsize=8)
    ax.set_xticks(pos, [SCHEMES.get(n, n) for n in names], fontsize=8)
    ax.set(ylim=(0, 1), title=f"rain on day t, Seattle 2015 (test), lags = {args.lags} days", ylabel="score")
    ax.legend(loc="upper right")
    run.save_figure(fig, "schemes.png")

    days = np.arange(120)
    fig, (ax1, ax2) = common.figure(2, 1, width=11, height=2.6, sharex=True)
    ax1.bar(days, precip[first_test:][days], color="C0")
    ax1.set(ylabel="precipitation (mm)", title="2015, first 120 days: precipitation and predicted rain probability")
    ax2.fill_between(days, 0, truth[days].astype(float), step="mid", color="0.85", label="rained")
    for name, color in zip(SCHEMES, ("C1", "C2", "C3")):
        ax2.plot(days, probs[name][days], color=color, lw=1.2, label=SCHEMES[name])
    ax2.axhline(0.5, color="0.4", ls=":", lw=0.8)
    ax2.set(xlabel="day of 2015", ylabel="P(rain)", ylim=(0, 1))
    ax2.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    run.save_figure(fig, "timeline.png")

    rows = [(SCHEMES.get(n, n), r["accuracy"], r["f1"], r["precision"], r["recall"]) for n, r in results.items()]
    return run.finish({"methods": results, "lags": args.lags, "test_days": int(len(truth))}, rows,
                      ("method (test 2015)", "accuracy", "F1", "precision", "recall"))


if __name__ == "__main__":
    main()
