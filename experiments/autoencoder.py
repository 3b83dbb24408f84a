"""The LSTM autoencoder of the first seed: reconstruction error, then anomaly scores on held-out sequences.

    python -m experiments.autoencoder [--epochs 40] [--quick]

Data (`make_sequences`): two-channel sensor sequences of 40 steps — a vibration of random period (9 to 11
steps), random phase and amplitude, and its second harmonic on channel 2, plus noise σ = 0.08. The
autoencoder, `sj.models.autoencoder` (encoder LSTM(32) -> LSTM(16) many-to-one, the code repeated at every
step, decoder LSTM(32) -> per-step dense), is trained on normal sequences only, on `(X, X)` with
`seqjax.train.fit`.

Held-out test sequences: half normal, half with one injected anomaly on a random segment
(`inject_anomaly`): a spike, a level shift, a frequency burst or a stuck (flat) sensor. The anomaly score
of a sequence is its reconstruction MSE. The threshold is the 95th percentile of the scores of *normal*
validation sequences (no anomaly labels needed); precision, recall and F1 are measured on the test set at
that threshold, with the ROC AUC as a threshold-free summary. Baseline detector: the same procedure with
the error of the sequence's own per-channel mean as its reconstruction.

Writes results/autoencoder/{metrics.json, config.json, reconstructions.png, scores.png}.
"""

from __future__ import annotations

import numpy as np

from experiments import common

KINDS = ("spike", "level shift", "frequency burst", "stuck sensor")


def make_sequences(num: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """Normal sequences `[num, steps, 2]` float32 (see the module docstring)."""
    t = np.arange(steps)[None, :]
    period = rng.uniform(9, 11, (num, 1))
    phase = rng.uniform(0, 2 * np.pi, (num, 1))
    amp = rng.uniform(0.7, 1.3, (num, 1))
    angle = 2 * np.pi * t / period + phase
    x = np.stack([amp * np.sin(angle), 0.5 * amp * np.sin(2 * angle + 0.5)], axis=-1)
    return (x + 0.08 * rng.standard_normal(x.shape)).astype(np.float32)


def inject_anomaly(x_TF: np.ndarray, kind: int, rng: np.random.Generator) -> tuple[np.ndarray, slice]:
    """A copy of one sequence `[T, 2]` with anomaly `KINDS[kind]` on a random segment; returns it and the segment."""
    x = x_TF.copy()
    steps = len(x)
    length = int(rng.integers(6, 12))
    start = int(rng.integers(2, steps - length))
    seg = slice(start, start + length)
    ch = int(rng.integers(0, 2))
    if kind == 0:  # spike: one or two steps far off
        seg = slice(start, start + int(rng.integers(1, 3)))
        x[seg, ch] += rng.choice([-1, 1]) * rng.uniform(1.5, 2.5)
    elif kind == 1:  # level shift on the segment
        x[seg, ch] += rng.choice([-1, 1]) * rng.uniform(0.6, 1.0)
    elif kind == 2:  # the vibration runs at about twice its frequency on the segment
        t = np.arange(length)
        x[seg, ch] = np.abs(x[:, ch]).max() * np.sin(2 * np.pi * t / rng.uniform(3, 4.5) + rng.uniform(0, 6.3))
    else:  # stuck sensor: the channel holds its value
        x[seg, ch] = x[start, ch]
    return x, seg


def auc(score_neg: np.ndarray, score_pos: np.ndarray) -> float:
    """ROC AUC: the probability that a random anomalous score exceeds a random normal one (ties count half)."""
    diff = score_pos[:, None] - score_neg[None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def detection(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Precision, recall and F1 of `scores > threshold` against bool `labels`."""
    flagged = scores > threshold
    tp = int(np.sum(flagged & labels))
    precision = tp / max(int(flagged.sum()), 1)
    recall = tp / max(int(labels.sum()), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {"precision": precision, "recall": recall, "f1": f1, "threshold": float(threshold),
            "auc": auc(scores[~labels], scores[labels])}


def main(argv=None) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    from seqjax import models, train

    p = common.parser(__doc__)
    p.add_argument("--train", type=int, default=None, help="normal training sequences (default 2000; quick 256)")
    p.add_argument("--steps", type=int, default=40, help="time steps per sequence")
    p.add_argument("--hidden", type=int, default=None, help="LSTM units of encoder and decoder (default 32; quick 16)")
    p.add_argument("--code", type=int, default=16, help="code size (the encoder's last LSTM)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 40; quick 12)")
    p.add_argument("--batch", type=int, default=32, help="sequences per minibatch")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (cosine decay)")
    p.add_argument("--quantile", type=float, default=95.0,
                   help="threshold percentile of the normal validation scores (default 95)")
    args = common.parse(p, argv, default={"train": 2000, "hidden": 32, "epochs": 40},
                        quick={"train": 256, "hidden": 16, "epochs": 12})
    run = common.Run("autoencoder", args)

    rng = np.random.default_rng(args.seed)
    num_val = num_test = max(128, args.train // 4)
    x_train = make_sequences(args.train, args.steps, rng)
    x_val = make_sequences(num_val, args.steps, rng)
    x_test = make_sequences(num_test, args.steps, rng)
    labels = np.zeros(num_test, bool)
    labels[num_test // 2:] = True
    kinds = np.full(num_test, -1)
    segments = {}
    for i in np.flatnonzero(labels):
        kinds[i] = (i - num_test // 2) % len(KINDS)
        x_test[i], segments[i] = inject_anomaly(x_test[i], kinds[i], rng)
    print(f"normal training sequences {x_train.shape} [samples, time_steps, features]; test {x_test.shape} "
          f"with {labels.sum()} anomalous")

    ae = models.autoencoder(2, encoder_hidden=(args.hidden,), code_size=args.code, decoder_hidden=(args.hidden,))
    steps_per_epoch = -(-args.train // args.batch)
    optimizer = optax.adam(optax.cosine_decay_schedule(args.lr, args.epochs * steps_per_epoch, alpha=0.05))
    fit = train.fit(ae.objective, optimizer, jax.jit(ae.init)(jax.random.key(args.seed)), (x_train, x_train),
                    val=(x_val, x_val), epochs=args.epochs, batch_size=args.batch, seed=args.seed,
                    progress=False)
    reconstruct = jax.jit(ae.reconstruct)
    params = fit.state.params

    def ae_scores(x):
        return np.mean((np.asarray(reconstruct(params, jnp.asarray(x))) - x) ** 2, axis=(1, 2))

    def mean_scores(x):
        return np.mean((x.mean(axis=1, keepdims=True) - x) ** 2, axis=(1, 2))

    results = {}
    for name, score_fn in (("autoencoder", ae_scores), ("mean_baseline", mean_scores)):
        val_scores, test_scores = score_fn(x_val), score_fn(x_test)
        threshold = float(np.percentile(val_scores, args.quantile))
        results[name] = {"reconstruction_mse_normal": float(np.mean(test_scores[~labels])),
                         **detection(test_scores, labels, threshold),
                         "recall_by_kind": {k: float(np.mean(test_scores[kinds == j] > threshold))
                                            for j, k in enumerate(KINDS)}}
        results[name]["_scores"] = test_scores

    recon = np.asarray(reconstruct(params, jnp.asarray(x_test)))
    fig, axes = common.figure(2, 3, width=14, height=3.0, sharex=True)
    picks = [int(np.flatnonzero(~labels)[0])] + [int(np.flatnonzero(kinds == j)[0]) for j in range(len(KINDS))]
    for ax, i in zip(np.ravel(axes), picks[:5] + [None]):
        if i is None:
            ax.axis("off")
            continue
        for ch, color in ((0, "C0"), (1, "C1")):
            ax.plot(x_test[i, :, ch], color=color, lw=1.6, label=f"channel {ch + 1}")
            ax.plot(recon[i, :, ch], color=color, lw=1.2, ls="--", label=f"reconstruction {ch + 1}")
        if i in segments:
            seg = segments[i]
            ax.axvspan(seg.start - 0.5, seg.stop - 0.5, color="red", alpha=0.12, label="injected anomaly")
        score = results["autoencoder"]["_scores"][i]
        flag = "flagged" if score > results["autoencoder"]["threshold"] else "not flagged"
        title = "normal" if kinds[i] < 0 else KINDS[kinds[i]]
        ax.set_title(f"{title}: score {score:.3f} ({flag})", fontsize=10)
    axes[0, 0].legend(fontsize=7, ncol=2)
    axes[1, 0].set_xlabel("step")
    fig.suptitle("LSTM autoencoder on held-out test sequences (solid: input, dashed: reconstruction)")
    run.save_figure(fig, "reconstructions.png")

    fig, (ax1, ax2) = common.figure(1, 2, width=12, height=3.6)
    s = results["autoencoder"]["_scores"]
    bins = np.logspace(np.log10(s.min()), np.log10(s.max()), 40)
    ax1.hist(s[~labels], bins=bins, alpha=0.6, label="normal")
    ax1.hist(s[labels], bins=bins, alpha=0.6, label="with anomaly")
    ax1.axvline(results["autoencoder"]["threshold"], color="black", ls="--",
                label=f"threshold ({args.quantile:g}th pct of normal val)")
    ax1.set(xscale="log", title="anomaly score = reconstruction MSE (test)", xlabel="score", ylabel="sequences")
    ax1.legend(fontsize=8)
    ax2.plot([h["loss"] for h in fit.history], label="train (normal)")
    ax2.plot([h["val_loss"] for h in fit.history], label="validation (normal)")
    ax2.set(yscale="log", title="training: reconstruction MSE", xlabel="epoch", ylabel="MSE")
    ax2.legend()
    run.save_figure(fig, "scores.png")

    for r in results.values():
        r.pop("_scores")
    rows = [(name, r["reconstruction_mse_normal"], r["precision"], r["recall"], r["f1"], r["auc"])
            for name, r in results.items()]
    return run.finish({"methods": results, "test_anomalous": int(labels.sum()), "test_normal": int((~labels).sum())},
                      rows, ("detector (test)", "recon MSE normal", "precision", "recall", "F1", "ROC AUC"))


if __name__ == "__main__":
    main()
