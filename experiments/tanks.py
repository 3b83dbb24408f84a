"""The first seed's oil tanks: many-to-many and many-to-one on the same `[samples, time_steps, features]` data.

    python -m experiments.tanks [--tanks 320] [--hours 72] [--epochs 60] [--quick]

Data: a small physical simulation (stated in `simulate_tanks`) of N tanks measured hourly, two features
per step, pressure P (bar) and temperature T (°C): `[N, hours, 2]`, the seed's `(N, 5, 2)` with more hours.
Each tank's temperature relaxes towards a target (the outside air's daily cycle, or 60 °C while a
heater that switches on and off at random is on); pressure relaxes towards the ideal-gas value of the
current temperature and gas amount, with a lag. A third of the tanks leak: their gas amount decays
slowly, so their pressure drifts down relative to their temperature.

Two models, one LSTM layer each, on the same tanks (80 % train, 20 % test, by tank):
  - many-to-many (`return_sequences=True`): an output at every step, the next hour's (P, T):
    `sj.scan` ys `[N, T-1, H]` -> per-step `sj.dense(2)` `[N, T-1, 2]`; baseline: persistence (next = now).
  - many-to-one (the last step only): is this tank leaking? `ys[:, -1]` `[N, H]` -> `sj.dense(1)` logit
    `[N, 1]`, binary cross-entropy through `seqjax.losses.last_step`; baseline: the majority class.
The `[samples, time_steps, features]` shape of every stage is printed.

Writes results/tanks/{metrics.json, config.json, tanks.png, training.png}.
"""

from __future__ import annotations

import numpy as np

from experiments import common


def simulate_tanks(num_tanks: int, hours: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hourly `(P bar, T °C)` of `num_tanks` tanks `[N, hours, 2]` float32, and `leaking [N]` bool.

    Per tank and hour t: outside air `A_t = a + 8 sin(2π (t - 9) / 24)` (a ~ U(5, 25) per tank); a heater
    that switches state with probability 0.08 per hour; `T_(t+1) = T_t + 0.15 (target_t - T_t) + 0.3 ε`
    with target 60 °C while heating, `A_t` otherwise; gas amount `g_(t+1) = g_t (1 - r)` with r ~ U(0.003,
    0.008) for the leaking third, 0 otherwise; `P_(t+1) = P_t + 0.35 (P0 g_t (T_t + 273.15) / 293.15 - P_t)
    + 0.01 ε` with P0 ~ U(1.8, 2.2) bar; ε standard normal noise.
    """
    rng = np.random.default_rng(seed)
    n = num_tanks
    air_mean = rng.uniform(5, 25, n)
    p0 = rng.uniform(1.8, 2.2, n)
    leaking = rng.random(n) < 1 / 3
    rate = np.where(leaking, rng.uniform(0.003, 0.008, n), 0.0)
    heater = rng.random(n) < 0.3
    temp = air_mean + rng.normal(0, 2, n)
    gas = np.ones(n)
    pressure = p0 * (temp + 273.15) / 293.15
    out = np.empty((n, hours, 2))
    for t in range(hours):
        out[:, t, 0], out[:, t, 1] = pressure, temp
        air = air_mean + 8 * np.sin(2 * np.pi * (t - 9) / 24)
        heater = np.where(rng.random(n) < 0.08, ~heater, heater)
        target = np.where(heater, 60.0, air)
        temp = temp + 0.15 * (target - temp) + 0.3 * rng.standard_normal(n)
        gas = gas * (1 - rate)
        pressure = pressure + 0.35 * (p0 * gas * (temp + 273.15) / 293.15 - pressure) + 0.01 * rng.standard_normal(n)
    return out.astype(np.float32), leaking


def binary_accuracy(logits, target, mask=None):
    """Share of correct 0/1 decisions at logit 0 (a metric for `seqjax.train.objective`)."""
    import jax.numpy as jnp
    from seqjax import losses

    hit = ((logits > 0) == (target > 0.5)).astype(jnp.float32)
    return losses.masked_mean(hit, mask)


def main(argv=None) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    import seqjax as sj
    from seqjax import data, losses, train

    p = common.parser(__doc__)
    p.add_argument("--tanks", type=int, default=None, help="number of tanks N (default 320; quick 64)")
    p.add_argument("--hours", type=int, default=None, help="hourly time steps per tank (default 72; quick 24)")
    p.add_argument("--hidden", type=int, default=None, help="LSTM units (default 32; quick 8)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of each model (default 60; quick 10)")
    p.add_argument("--batch", type=int, default=32, help="tanks per minibatch")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    args = common.parse(p, argv, default={"tanks": 320, "hours": 72, "hidden": 32, "epochs": 60},
                        quick={"tanks": 64, "hours": 24, "hidden": 8, "epochs": 10})
    run = common.Run("tanks", args)

    tanks_NTF, leaking_N = simulate_tanks(args.tanks, args.hours, args.seed)
    num_train = int(0.8 * args.tanks)
    scaler = data.fit_standard(tanks_NTF[:num_train].reshape(-1, 2))  # statistics of the training tanks only
    z_NTF = scaler.transform(tanks_NTF).astype(np.float32)
    print(f"simulated tanks          [samples, time_steps, features] = {tanks_NTF.shape}  (P bar, T °C)")

    # ---- many-to-many: the next hour's (P, T) at every step
    x_NTF, y_NTF = data.next_step_pairs(z_NTF)
    print(f"many-to-many inputs      {x_NTF.shape}, targets {y_NTF.shape}  (targets[:, t] = inputs[:, t + 1])")
    m2m = sj.chain(sj.lstm(args.hidden), sj.dense(2))
    params = jax.jit(m2m.init, static_argnums=1)(jax.random.key(args.seed), 2)
    lstm = sj.lstm(args.hidden)
    _, hidden_NTH = jax.eval_shape(lambda p, x: sj.scan(lstm, p, lstm.initial_carry(2), x), params[0], x_NTF[:2])
    print(f"  LSTM outputs (return_sequences) {(len(x_NTF),) + hidden_NTH.shape[1:]} -> per-step dense "
          f"{x_NTF.shape[:2] + (2,)}")
    fit_m2m = train.fit(train.objective(m2m, losses.mse), optax.adam(args.lr), params,
                        (x_NTF[:num_train], y_NTF[:num_train]), val=(x_NTF[num_train:], y_NTF[num_train:]),
                        epochs=args.epochs, batch_size=args.batch, seed=args.seed, progress=False)
    predict = jax.jit(lambda p, x: sj.scan(m2m, p, m2m.initial_carry(x.shape[0]), x)[1])
    pred_NTF = scaler.inverse(np.asarray(predict(fit_m2m.state.params, jnp.asarray(x_NTF[num_train:]))))
    truth_NTF = tanks_NTF[num_train:, 1:]
    now_NTF = tanks_NTF[num_train:, :-1]
    rmse = lambda a, b: np.sqrt(np.mean((a - b) ** 2, axis=(0, 1)))  # noqa: E731  per feature
    m2m_rmse, persist_rmse = rmse(pred_NTF, truth_NTF), rmse(now_NTF, truth_NTF)

    # ---- many-to-one: is the tank leaking? (the last step's output only)
    target_N1 = leaking_N.astype(np.float32)[:, None]
    print(f"many-to-one inputs       {z_NTF.shape}, targets {target_N1.shape}  (one label per tank)")
    m2o = sj.chain(sj.lstm(args.hidden), sj.dense(1))
    print(f"  LSTM outputs {z_NTF.shape[:2] + (args.hidden,)} -> last step {(len(z_NTF), args.hidden)} -> "
          f"dense logit {target_N1.shape}")
    obj = train.objective(m2o, losses.last_step(losses.binary_crossentropy),
                          metrics={"accuracy": losses.last_step(binary_accuracy)})
    fit_m2o = train.fit(obj, optax.adam(args.lr), jax.jit(m2o.init, static_argnums=1)(jax.random.key(args.seed + 1), 2),
                        (z_NTF[:num_train], target_N1[:num_train]), val=(z_NTF[num_train:], target_N1[num_train:]),
                        epochs=args.epochs, batch_size=args.batch, seed=args.seed, progress=False)
    logits_N = np.asarray(jax.jit(lambda p, x: sj.scan(m2o, p, m2o.initial_carry(x.shape[0]), x)[1][:, -1, 0])(
        fit_m2o.state.params, jnp.asarray(z_NTF[num_train:])))
    test_leak = leaking_N[num_train:]
    accuracy = float(np.mean((logits_N > 0) == test_leak))
    majority = float(max(test_leak.mean(), 1 - test_leak.mean()))

    # ---- figures
    fig, axes = common.figure(2, 2, width=12, height=3.2, sharex=True)
    hours = np.arange(1, args.hours)
    for col, k in enumerate((int(np.argmax(test_leak)), int(np.argmin(test_leak)))):
        for row, (name, unit) in enumerate((("pressure", "bar"), ("temperature", "°C"))):
            ax = axes[row, col]
            ax.plot(hours, truth_NTF[k, :, row], color="black", lw=1.6, label="measured")
            ax.plot(hours, pred_NTF[k, :, row], color="C3", lw=1.2, ls="--", label="many-to-many next-hour")
            ax.set_ylabel(f"{name} ({unit})")
            if row == 0:
                status = "leaking" if test_leak[k] else "healthy"
                verdict = "leaking" if logits_N[k] > 0 else "healthy"
                ax.set_title(f"test tank {num_train + k} ({status}); many-to-one says: {verdict}")
            else:
                ax.set_xlabel("hour")
    axes[0, 0].legend(fontsize=8)
    run.save_figure(fig, "tanks.png")

    fig, (ax1, ax2) = common.figure(1, 2, width=11, height=3.4)
    epochs = np.arange(1, args.epochs + 1)
    ax1.plot(epochs, [h["loss"] for h in fit_m2m.history], label="train")
    ax1.plot(epochs, [h["val_loss"] for h in fit_m2m.history], label="test tanks")
    ax1.set(title="many-to-many: next-hour MSE (standardised)", xlabel="epoch", ylabel="MSE", yscale="log")
    ax1.legend()
    ax2.plot(epochs, [h["accuracy"] for h in fit_m2o.history], label="train")
    ax2.plot(epochs, [h["val_accuracy"] for h in fit_m2o.history], label="test tanks")
    ax2.axhline(majority, color="0.4", ls=":", label="majority class")
    ax2.set(title="many-to-one: leak detection accuracy", xlabel="epoch", ylabel="accuracy")
    ax2.legend()
    run.save_figure(fig, "training.png")

    metrics = {
        "many_to_many": {"rmse_pressure": m2m_rmse[0], "rmse_temperature": m2m_rmse[1],
                         "persistence_rmse_pressure": persist_rmse[0],
                         "persistence_rmse_temperature": persist_rmse[1]},
        "many_to_one": {"accuracy": accuracy, "majority_accuracy": majority},
        "shapes": {"data": list(tanks_NTF.shape), "many_to_many_inputs": list(x_NTF.shape),
                   "many_to_many_outputs": list(x_NTF.shape[:2]) + [2],
                   "many_to_one_inputs": list(z_NTF.shape), "many_to_one_outputs": list(target_N1.shape)},
    }
    rows = [("many-to-many next hour", "RMSE P (bar)", m2m_rmse[0], persist_rmse[0]),
            ("many-to-many next hour", "RMSE T (°C)", m2m_rmse[1], persist_rmse[1]),
            ("many-to-one leak", "accuracy", accuracy, majority)]
    return run.finish(metrics, rows, ("task (test tanks)", "metric", "seqjax", "baseline"))


if __name__ == "__main__":
    main()
