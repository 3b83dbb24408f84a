"""`seqjax.feedback`: identity, head, token sampling (temperature, top-k, key, embedding), the closed loop's
keys, `next_inputs`, and the errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqjax as sj
from seqjax import feedback as fb

B, F, H, V, E = 4, 3, 6, 9, 5  # batch, input features, hidden, vocabulary, embedding


def _x(seed, shape):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _close(a, b, atol=1e-5):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol), a, b)


def test_identity_is_the_default():
    model = sj.chain(sj.gru(H), sj.dense(F))
    params = model.init(jax.random.key(0), F)
    x0 = _x(1, (B, F))
    _close(sj.rollout(model, params, model.initial_carry(B), x0, 4, fb.identity()),
           sj.rollout(model, params, model.initial_carry(B), x0, 4))


def test_head_maps_the_output_into_the_input_space():
    model = sj.lstm(H)  # outputs h [B, H]; a dense head maps it back to the F input features
    params = model.init(jax.random.key(2), F)
    head_cell = sj.dense(F, activation="tanh")
    head_params = head_cell.init(jax.random.key(3), H)
    head = fb.head(head_cell, head_params)
    y = _x(4, (B, H))
    np.testing.assert_allclose(head.apply(jnp.asarray(y), None),
                               np.tanh(y @ np.asarray(head_params["w"]) + np.asarray(head_params["b"])), atol=1e-6)
    carry0, x0 = model.initial_carry(B), _x(5, (B, F))
    carry, ys = sj.rollout(model, params, carry0, x0, 5, head)
    ref_carry, x, ref_ys = carry0, jnp.asarray(x0), []
    for _ in range(5):
        ref_carry, y = model.step(params, ref_carry, x)
        ref_ys.append(y)
        x = jnp.tanh(y @ head_params["w"] + head_params["b"])
    _close((carry, ys), (ref_carry, jnp.stack(ref_ys, 1)))


def test_head_errors():
    with pytest.raises(ValueError, match=r"sj.feedback.head: cell must be stateless .* lstm has a carry"):
        fb.head(sj.lstm(3), sj.lstm(3).init(jax.random.key(0), 2))
    model = sj.lstm(H)
    params = model.init(jax.random.key(0), F)
    wrong = sj.dense(F)
    head = fb.head(wrong, wrong.init(jax.random.key(1), H + 1))  # takes 7 features, the model outputs 6
    with pytest.raises(ValueError, match=r"sj.feedback.head: the model's output y_t must be \[batch, 7\] .*\(4, 6\)"):
        sj.rollout(model, params, model.initial_carry(B), _x(0, (B, F)), 3, head)


def test_sample_token_reproducible_and_key_dependent():
    logits = jnp.asarray(_x(6, (64, V)))
    sampler = fb.sample_token()
    a = sampler.apply(logits, jax.random.key(7))
    assert a.shape == (64,) and a.dtype == jnp.int32
    np.testing.assert_array_equal(a, sampler.apply(logits, jax.random.key(7)))
    assert not np.array_equal(a, sampler.apply(logits, jax.random.key(8)))


def _frequencies(sampler, logits_V, n=6000):
    keys = jax.random.split(jax.random.key(9), n)
    ids = jax.vmap(lambda k: sampler.apply(logits_V[None], k)[0])(keys)
    return np.bincount(np.asarray(ids), minlength=logits_V.shape[0]) / n


def _softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def test_sample_token_follows_the_tempered_softmax_and_top_k():
    logits = jnp.asarray([1.0, 0.2, -0.5, 2.0, 0.0, -1.0, 0.7, 1.5, -2.0])
    freq = _frequencies(fb.sample_token(temperature=0.7), logits)
    np.testing.assert_allclose(freq, _softmax(np.asarray(logits) / 0.7), atol=0.02)
    top3 = np.argsort(-np.asarray(logits))[:3]
    freq = _frequencies(fb.sample_token(temperature=1.5, top_k=3), logits)
    expected = np.zeros(V)
    expected[top3] = _softmax(np.asarray(logits)[top3] / 1.5)
    np.testing.assert_allclose(freq, expected, atol=0.02)
    assert freq[np.setdiff1d(np.arange(V), top3)].sum() == 0


def test_sample_token_temperature_zero_is_argmax():
    logits = jnp.asarray(_x(10, (B, V)))
    greedy = fb.sample_token(temperature=0.0)
    for seed in range(3):
        np.testing.assert_array_equal(greedy.apply(logits, jax.random.key(seed)), np.argmax(np.asarray(logits), -1))
    np.testing.assert_array_equal(fb.sample_token(top_k=1).apply(logits, jax.random.key(11)),
                                  np.argmax(np.asarray(logits), -1))


def _lm(seed=12):
    model = sj.chain(sj.embed(V, E), sj.gru(H), sj.dense(V))
    return model, model.init(jax.random.key(seed), None)


def test_sampling_rollout_equals_python_loop_with_fold_in_keys():
    model, params = _lm()
    sampler, key = fb.sample_token(temperature=0.9, top_k=4), jax.random.key(13)
    x0 = jnp.asarray([1, 4, 0, 8], jnp.int32)
    carry, logits = sj.rollout(model, params, model.initial_carry(B), x0, 7, sampler, key=key)
    ref_carry, x, ref_logits, tokens = model.initial_carry(B), x0, [], []
    step, sample = jax.jit(model.step), jax.jit(sampler.apply)
    for i in range(7):
        ref_carry, y = step(params, ref_carry, x)
        ref_logits.append(y)
        x = sample(y, jax.random.fold_in(key, i))
        tokens.append(x)
    _close((carry, logits), (ref_carry, jnp.stack(ref_logits, 1)))
    np.testing.assert_array_equal(fb.next_inputs(sampler, logits, key=key), np.stack(tokens, 1))
    # a longer run with the same key starts with the same samples
    _, longer = sj.rollout(model, params, model.initial_carry(B), x0, 10, sampler, key=key)
    np.testing.assert_allclose(longer[:, :7], logits, atol=1e-6)


def test_sample_and_embed_for_a_model_taking_vectors():
    model = sj.chain(sj.gru(H), sj.dense(V))  # takes one-hot vectors [B, V]
    params = model.init(jax.random.key(14), V)
    sampler, key = fb.sample_token(embed=lambda ids: jax.nn.one_hot(ids, V)), jax.random.key(15)
    x0 = jax.nn.one_hot(jnp.asarray([0, 3, 5, 2]), V)
    carry, logits = sj.rollout(model, params, model.initial_carry(B), x0, 5, sampler, key=key)
    ref_carry, x, ref = model.initial_carry(B), x0, []
    step = jax.jit(model.step)
    sample = jax.jit(lambda y, k: jax.nn.one_hot(jax.random.categorical(k, y), V))
    for i in range(5):
        ref_carry, y = step(params, ref_carry, x)
        ref.append(y)
        x = sample(y, jax.random.fold_in(key, i))
    _close((carry, logits), (ref_carry, jnp.stack(ref, 1)))
    inputs = fb.next_inputs(sampler, logits, key=key)
    assert inputs.shape == (B, 5, V)
    np.testing.assert_array_equal(inputs.sum(-1), 1.0)


def test_errors():
    model, params = _lm()
    x0 = jnp.zeros((B,), jnp.int32)
    with pytest.raises(ValueError, match=r"sj.rollout: key is required: feedback sample_token samples"):
        sj.rollout(model, params, model.initial_carry(B), x0, 3, fb.sample_token())
    with pytest.raises(TypeError, match=r"sj.rollout: the model's output must be integer token ids like the input"):
        sj.rollout(model, params, model.initial_carry(B), x0, 3)
    with pytest.raises(ValueError, match=r"sj.rollout: exogenous inputs need feature inputs \[batch, features\]"):
        sj.rollout(model, params, model.initial_carry(B), x0, 3, fb.sample_token(), key=jax.random.key(0),
                   exogenous=_x(0, (B, 3, 2)))
    with pytest.raises(ValueError, match=r"sj.feedback.sample_token: top_k must be <= the vocabulary size 9; got 10"):
        sj.rollout(model, params, model.initial_carry(B), x0, 3, fb.sample_token(top_k=10), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"sj.feedback.sample_token: temperature must be a float >= 0"):
        fb.sample_token(temperature=-1.0)
    with pytest.raises(ValueError, match=r"sj.feedback.sample_token: top_k must be None or an int >= 1; got 0"):
        fb.sample_token(top_k=0)
    with pytest.raises(ValueError, match=r"sj.feedback.sample_token: the model's output must be logits \[batch,"):
        fb.sample_token().apply(jnp.zeros((B, 2, V)), jax.random.key(0))
    with pytest.raises(ValueError, match=r"sj.feedback.next_inputs: ys must be \[batch, steps, ...\]"):
        fb.next_inputs(None, jnp.zeros((B,)))
    with pytest.raises(TypeError, match=r"sj.rollout: key must be a PRNG key"):
        sj.rollout(model, params, model.initial_carry(B), x0, 3, fb.sample_token(), key=3)


def test_custom_keyed_feedback_and_vmap_over_keys_for_an_ensemble():
    model = sj.chain(sj.lstm(H), sj.dense(2 * F))  # a Gaussian head: mean and log-scale of the next input

    def draw(y, key):
        return y[:, :F] + jnp.exp(y[:, F:]) * jax.random.normal(key, (y.shape[0], F))

    gaussian = fb.Feedback(apply=draw, needs_key=True, name="gaussian")
    params = model.init(jax.random.key(16), F)
    carry0, x0 = model.initial_carry(B), _x(17, (B, F))
    keys = jax.random.split(jax.random.key(18), 6)
    carry, ys = jax.vmap(lambda k: sj.rollout(model, params, carry0, x0, 5, gaussian, key=k))(keys)
    assert ys.shape == (6, B, 5, 2 * F)
    for i in (0, 5):
        _close(jax.tree.map(lambda a: a[i], (carry, ys)),
               sj.rollout(model, params, carry0, x0, 5, gaussian, key=keys[i]))
    assert not np.allclose(ys[0, :, 1:], ys[1, :, 1:])  # members differ after the first draw
    np.testing.assert_allclose(ys[0, :, 0], ys[1, :, 0], atol=1e-6)  # the first output precedes any draw
