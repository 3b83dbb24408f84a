"""Online learning: predict-then-update equals a hand-written optax step, the error on a drifting stream falls
below persistence, a checkpointed learner resumes exactly, masks and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import seqjax as sj
from seqjax import losses, online, train

S, F, H = 5, 2, 8  # streams, features (value, calendar), hidden; one output


def _model(seed=0):
    model = sj.chain(sj.lstm(H), sj.dense(1))
    return model, model.init(jax.random.key(seed), F)


def _drifting_streams(n, seed=0):
    """`x [n, S, F]` (value, calendar feature) and targets `y [n, S, 1]` = next value.

    Each stream is mean-reverting around a drifting level shared by all (a market) with a drifting, negative
    autocorrelation, so yesterday's value (persistence) is a poor forecast and the best one keeps moving.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n + 1)[:, None]
    level = 0.8 * np.sin(2 * np.pi * t / 400 + rng.uniform(0, 2 * np.pi))
    a = -0.8 + 0.3 * t / n
    v = np.zeros((n + 1, S))
    for i in range(1, n + 1):
        v[i] = level[i] + a[i] * (v[i - 1] - level[i - 1]) + 0.1 * rng.standard_normal(S)
    calendar = np.broadcast_to(np.sin(2 * np.pi * t / 7), (n + 1, S))
    x = np.stack([v, calendar], -1)[:-1].astype(np.float32)
    return x, v[1:, :, None].astype(np.float32)


def test_online_error_on_a_drifting_stream_falls_below_persistence():
    model, params = _model(1)
    optimizer = optax.adam(1e-2)
    learner = online.init_learner(model, params, optimizer, S)
    step = online.make_online_step(model, losses.mse, optimizer)
    x, y = _drifting_streams(600)
    errors = []
    for t in range(len(x)):
        learner, metrics = step(learner, x[t], y[t])
        errors.append(metrics.loss)
    errors = np.asarray(errors)
    persistence = np.mean((x[:, :, :1] - y) ** 2, axis=(1, 2))
    assert int(learner.position) == 600 and int(learner.state.step) == 600
    late = slice(400, 600)
    assert errors[late].mean() < 0.6 * persistence[late].mean()
    assert errors[late].mean() < 0.6 * errors[:50].mean()


def test_predict_then_update_equals_a_hand_written_optax_step():
    model, params = _model(2)
    optimizer = optax.adam(3e-2)
    learner = online.init_learner(model, params, optimizer, S)
    step = online.make_online_step(model, losses.mse, optimizer, donate=False)
    x, y = _drifting_streams(4, seed=3)
    p, opt_state, carry = params, optimizer.init(params), model.initial_carry(S)
    for t in range(4):
        learner, metrics = step(learner, x[t], y[t])

        def loss(p):
            c, pred = model.step(p, carry, x[t])
            return jnp.mean((pred - y[t]) ** 2), (c, pred)

        (value, (new_carry, pred)), grads = jax.value_and_grad(loss, has_aux=True)(p)
        np.testing.assert_allclose(metrics.prediction, pred, atol=1e-6)  # made with the params before the update
        np.testing.assert_allclose(metrics.loss, value, rtol=1e-6)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        p, carry = optax.apply_updates(p, updates), new_carry
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), learner.state.params, p)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), learner.carry, carry)
    assert int(learner.position) == 4


def test_checkpointed_learner_resumes_exactly(tmp_path):
    model, params = _model(4)
    optimizer = optax.adam(1e-2)
    step = online.make_online_step(model, losses.mse, optimizer)
    x, y = _drifting_streams(30, seed=5)

    learner = online.init_learner(model, params, optimizer, S)
    for t in range(30):
        learner, _ = step(learner, x[t], y[t])

    resumed = online.init_learner(model, params, optimizer, S)
    for t in range(18):
        resumed, _ = step(resumed, x[t], y[t])
    with train.Checkpointer(tmp_path / "online") as ckpt:
        assert online.save(ckpt, resumed) == 18
    del resumed  # a restart: a new process knows only the model, the optimizer and the checkpoint
    fresh = online.init_learner(model, model.init(jax.random.key(99), F), optimizer, S)
    with train.Checkpointer(tmp_path / "online") as ckpt:
        restored = online.restore(ckpt, fresh)
    assert int(restored.position) == 18
    for t in range(int(restored.position), 30):
        restored, _ = step(restored, x[t], y[t])
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 (restored.state.params, restored.state.opt_state, restored.carry, restored.position),
                 (learner.state.params, learner.state.opt_state, learner.carry, learner.position))


def test_mask_keeps_the_carry_of_streams_without_an_observation():
    model, params = _model(6)
    optimizer = optax.sgd(0.1)
    step = online.make_online_step(model, losses.mse, optimizer, donate=False)
    x, y = _drifting_streams(3, seed=7)
    learner = online.init_learner(model, params, optimizer, S)
    learner, _ = step(learner, x[0], y[0])
    mask = np.array([True, False, True, True, False])
    after, metrics = step(learner, x[1], y[1], mask)
    for a, b in zip(jax.tree.leaves(after.carry), jax.tree.leaves(learner.carry)):
        np.testing.assert_array_equal(np.asarray(a)[~mask], np.asarray(b)[~mask])
        assert not np.allclose(np.asarray(a)[mask], np.asarray(b)[mask])
    pred = np.asarray(metrics.prediction)
    np.testing.assert_allclose(metrics.loss, np.mean((pred[mask] - y[1][mask]) ** 2), rtol=1e-5)


def test_errors():
    model, params = _model(8)
    optimizer = optax.adam(1e-3)
    step = online.make_online_step(model, losses.mse, optimizer, donate=False)
    learner = online.init_learner(model, params, optimizer, S)
    with pytest.raises(ValueError, match=r"seqjax.online step: x_t must be \[streams, 2\] .*got \(5, 3\)"):
        step(learner, np.zeros((S, 3), np.float32), np.zeros((S, 1), np.float32))
    with pytest.raises(ValueError, match=r"seqjax.online step: learner.carry leaves must have shape \(4, 8\)"):
        step(learner, np.zeros((4, F), np.float32), np.zeros((4, 1), np.float32))
    with pytest.raises(ValueError, match=r"seqjax.online step: mask must be \[streams\] = \(5,\) bool"):
        step(learner, np.zeros((S, F), np.float32), np.zeros((S, 1), np.float32), np.ones(S, np.int32))
    with pytest.raises(TypeError, match=r"seqjax.online.make_online_step: loss must be a callable"):
        online.make_online_step(model, "mse", optimizer)
