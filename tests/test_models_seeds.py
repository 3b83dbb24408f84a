"""The seeds' models: one-to-many (repeat and feedback) against float64 NumPy loops, the LSTM autoencoder's
reconstruction error falls, the language model's masked loss falls on a tiny text and its sampling is
reproducible."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import seqjax as sj
from seqjax import losses, models, train
import reference as ref

B, F, H, S, FO = 3, 2, 6, 5, 4  # batch, in features, hidden, steps, out features


def _x(seed, shape):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _np_lstm_dense(params, x_steps):
    """float64 NumPy: lstm then dense over the given per-step inputs (a list of [B, F])."""
    p, d = ref.np64(params[0]), ref.np64(params[1])
    h = c = np.zeros((x_steps[0].shape[0], p["w_h"].shape[0]))
    ys = []
    for x in x_steps:
        h, c = ref.lstm_step(p, h, c, np.asarray(x, np.float64))
        ys.append(h @ d["w"] + d["b"])
    return np.stack(ys, 1)


def test_one_to_many_repeat_is_the_vector_at_every_step():
    m = models.one_to_many_repeat(F, H, FO, S)
    params, x = m.init(jax.random.key(0)), _x(1, (B, F))
    ys = m.apply(params, x)
    assert ys.shape == (B, S, FO)
    np.testing.assert_allclose(ys, _np_lstm_dense(params, [x] * S), atol=2e-5)


def test_one_to_many_feedback_feeds_each_output_back():
    m = models.one_to_many_feedback(F, H, S)
    params, x = m.init(jax.random.key(2)), _x(3, (B, F))
    ys = m.apply(params, x)
    assert ys.shape == (B, S, F)
    p, d = ref.np64(params[0]), ref.np64(params[1])
    h = c = np.zeros((B, H))
    inp, expected = np.asarray(x, np.float64), []
    for _ in range(S):
        h, c = ref.lstm_step(p, h, c, inp)
        inp = h @ d["w"] + d["b"]
        expected.append(inp)
    np.testing.assert_allclose(ys, np.stack(expected, 1), atol=2e-5)


def _fit(objective, params, batch, steps, lr):
    optimizer = optax.adam(lr)
    step = train.make_train_step(objective, optimizer)
    state = train.init_state(params, optimizer)
    history = []
    for _ in range(steps):
        state, metrics = step(state, batch)
        history.append(float(metrics["loss"]))
    return state, history


def test_one_to_many_models_learn_a_decay_from_its_start():
    x = _x(4, (8, F))
    target = x[:, None] * (0.7 ** np.arange(1, S + 1, dtype=np.float32))[None, :, None]  # y_t = 0.7 y_(t-1)
    for m in (models.one_to_many_repeat(F, H, F, S), models.one_to_many_feedback(F, H, S)):
        def loss_fn(params, batch, key, m=m):
            return losses.mse(m.apply(params, batch.inputs), batch.targets), {}

        _, history = _fit(train.stateless_objective(loss_fn), m.init(jax.random.key(5)), (x, target), 60, 2e-2)
        assert history[-1] < 0.3 * history[0]


def _smooth_signals(n, t, seed):
    rng = np.random.default_rng(seed)
    time = np.linspace(0, 2 * np.pi, t)
    freq, phase = rng.uniform(0.5, 1.5, (n, 1, F)), rng.uniform(0, np.pi, (n, 1, F))
    return (0.8 * np.sin(freq * time[None, :, None] + phase)).astype(np.float32)


def test_autoencoder_reconstruction_error_falls():
    ae = models.autoencoder(F, encoder_hidden=(), code_size=5, decoder_hidden=(10,))
    params = ae.init(jax.random.key(6))
    X = _smooth_signals(8, 7, 7)
    encode, reconstruct = jax.jit(ae.encode), jax.jit(ae.reconstruct)
    code = encode(params, X)
    assert code.shape == (8, 5)
    np.testing.assert_allclose(code, sj.scan(ae.encoder, params.encoder, ae.encoder.initial_carry(8), X)[1][:, -1],
                               atol=1e-6)
    recon = reconstruct(params, X)
    assert recon.shape == X.shape
    np.testing.assert_allclose(recon, ae.decode(params, code, 7), atol=1e-6)
    state, history = _fit(ae.objective, params, (X, X), 80, 2e-2)
    np.testing.assert_allclose(history[0], np.mean((np.asarray(recon) - X) ** 2), rtol=1e-5)  # mse of (X, X)
    assert history[-1] < 0.3 * history[0]
    mse = float(np.mean((np.asarray(reconstruct(state.params, X)) - X) ** 2))
    assert mse < 0.3 * history[0]


TEXT = "the cat sat on the mat. the dog sat on the log. a cat and a dog sat. "


def _tiny_corpus(T=10, n=12):
    vocab = sorted(set(TEXT))
    ids = np.array([vocab.index(ch) for ch in TEXT], np.int32)
    starts = np.arange(n) * 5 % (len(ids) - T - 1)
    seqs = np.stack([ids[s:s + T + 1] for s in starts])
    inputs, targets = seqs[:, :-1].copy(), seqs[:, 1:].copy()
    lengths = np.random.default_rng(8).integers(T // 2, T + 1, n)
    mask = np.arange(T)[None, :] < lengths[:, None]  # right padding
    inputs[~mask], targets[~mask] = 0, -1  # padding ids; -1 would be NaN were it counted
    return vocab, inputs, targets, mask


def test_language_model_masked_loss_falls_on_a_tiny_text():
    vocab, inputs, targets, mask = _tiny_corpus()
    lm = models.language_model(len(vocab), 8, hidden=(24, 16))
    params = lm.init(jax.random.key(9))
    logits = lm.logits(params, inputs)
    assert logits.shape == (*inputs.shape, len(vocab))
    # the loss is the masked mean of -log softmax at the targets (NumPy, float64)
    lp = np.asarray(jax.nn.log_softmax(np.asarray(logits, np.float64), -1))
    picked = np.take_along_axis(lp, np.where(mask, targets, 0)[..., None], -1)[..., 0]
    expected = -picked[mask].mean()
    state, history = _fit(lm.objective, params, (inputs, targets, mask), 80, 3e-2)
    np.testing.assert_allclose(history[0], expected, rtol=1e-5)  # the first step reports the loss at init
    assert np.isfinite(history).all()
    assert history[-1] < 0.5 * history[0]


def test_language_model_sampling_is_reproducible_and_key_dependent():
    vocab, inputs, _, _ = _tiny_corpus()
    lm = models.language_model(len(vocab), 8, hidden=(24, 16))
    params = lm.init(jax.random.key(10))
    prompt = inputs[:4, :5]
    gen = jax.jit(lm.generate, static_argnames=("steps", "temperature", "top_k"))
    a = gen(params, prompt, 12, jax.random.key(11), temperature=1.0, top_k=None)
    b = gen(params, prompt, 12, jax.random.key(11), temperature=1.0, top_k=None)
    c = gen(params, prompt, 12, jax.random.key(12), temperature=1.0, top_k=None)
    assert a.shape == (4, 12) and a.dtype == jnp.int32
    assert ((np.asarray(a) >= 0) & (np.asarray(a) < len(vocab))).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # greedy (temperature 0) equals a Python loop of step + argmax, and top_k=1 is greedy whatever the key
    greedy = gen(params, prompt, 12, jax.random.key(13), temperature=0.0, top_k=None)
    carry, logits = sj.scan(lm.cell, params, lm.cell.initial_carry(4), prompt)
    token, expected, step = jnp.argmax(logits[:, -1], -1), [], jax.jit(lm.cell.step)
    for _ in range(12):
        expected.append(token)
        carry, y = step(params, carry, token)
        token = jnp.argmax(y, -1)
    np.testing.assert_array_equal(greedy, np.stack(expected, 1))
    np.testing.assert_array_equal(gen(params, prompt, 12, jax.random.key(14), temperature=1.0, top_k=1), greedy)
