"""Scheduled sampling: ratio 1 is teacher forcing (sj.scan), ratio 0 is free running (sj.rollout), per-step
per-sample coins, exogenous features, masks, traced ratios, and training with seqjax.train steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import seqjax as sj
from seqjax import feedback as fb
from seqjax import losses, teacher, train

B, T, F, H = 5, 9, 3, 7


def _close(a, b, atol=1e-5):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol), a, b)


def _x(seed, shape):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _model(seed=0, out=F):
    model = sj.chain(sj.lstm(H), sj.dense(out))
    return model, model.init(jax.random.key(seed), F)


def _carry(model, seed):
    leaves, treedef = jax.tree.flatten(model.initial_carry(B))
    return jax.tree.unflatten(treedef, [jnp.asarray(_x(seed + i, a.shape)) for i, a in enumerate(leaves)])


def test_ratio_one_equals_teacher_forcing_scan():
    model, params = _model(1)
    carry0, xs = _carry(model, 2), _x(3, (B, T, F))
    got = teacher.scheduled_sampling(model, params, carry0, xs, ratio=1.0, key=jax.random.key(4))
    _close(got, sj.scan(model, params, carry0, xs))


def test_ratio_one_with_mask_equals_masked_scan():
    model, params = _model(5)
    carry0, xs = _carry(model, 6), _x(7, (B, T, F))
    mask = np.random.default_rng(8).random((B, T)) > 0.3
    mask[0, :3] = False  # left padding on one sample
    got = teacher.scheduled_sampling(model, params, carry0, xs, ratio=1.0, key=jax.random.key(9), mask=mask)
    _close(got, sj.scan(model, params, carry0, xs, mask=mask))


def test_ratio_zero_equals_free_running_rollout():
    model, params = _model(10)
    carry0, xs = _carry(model, 11), _x(12, (B, T, F))
    got = teacher.scheduled_sampling(model, params, carry0, xs, ratio=0.0, key=jax.random.key(13))
    _close(got, sj.rollout(model, params, carry0, xs[:, 0], T))


def test_ratio_zero_with_sampled_tokens_equals_rollout_with_the_feedback_key():
    V = 11
    model = sj.chain(sj.embed(V, 6), sj.gru(H), sj.dense(V))
    params = model.init(jax.random.key(14), None)
    tokens = np.random.default_rng(15).integers(0, V, (B, T)).astype(np.int32)
    key, sampler = jax.random.key(16), fb.sample_token(temperature=1.3)
    got = teacher.scheduled_sampling(model, params, model.initial_carry(B), tokens, ratio=0.0, key=key,
                                     feedback=sampler)
    k_feedback = jax.random.split(key, 3)[1]  # the documented key of the feedback draws
    _close(got, sj.rollout(model, params, model.initial_carry(B), tokens[:, 0], T, sampler, key=k_feedback))


def _reference(model, params, carry, xs, ratio, key, feedback):
    """Python loop of `step`: true input where the documented coin says so, else feedback(previous output)."""
    k_coin = jax.random.split(key, 3)[0]
    ys, y = [], None
    for t in range(xs.shape[1]):
        use = np.ones(xs.shape[0], bool) if t == 0 else np.asarray(
            jax.random.bernoulli(jax.random.fold_in(k_coin, t), ratio, (xs.shape[0],)))
        x = jnp.asarray(xs[:, t]) if t == 0 else jnp.where(use[:, None], xs[:, t], feedback(y))
        carry, y = model.step(params, carry, x)
        ys.append(y)
    return carry, jnp.stack(ys, 1)


def test_intermediate_ratio_equals_python_loop_with_the_same_coins():
    model, params = _model(17, out=2)
    carry0, xs = _carry(model, 18), _x(19, (B, T, F))

    def head(y):
        return jnp.concatenate([y, jnp.tanh(y[:, :1])], -1)

    key = jax.random.key(20)
    got = teacher.scheduled_sampling(model, params, carry0, xs, ratio=0.6, key=key, feedback=head)
    _close(got, _reference(model, params, carry0, xs, 0.6, key, head))


def _copy_model(features):
    """`y = x`: outputs equal inputs, so each output shows which input the step took."""
    model = sj.dense(features)
    return model, {"w": jnp.eye(features), "b": jnp.zeros((features,))}


def test_coins_are_per_step_and_per_sample_with_probability_ratio():
    Bn, Tn = 64, 50
    model, params = _copy_model(1)
    xs = jnp.broadcast_to(jnp.arange(1, Tn + 1, dtype=jnp.float32)[None, :, None], (Bn, Tn, 1))
    _, ys = teacher.scheduled_sampling(model, params, (), xs, ratio=0.3, key=jax.random.key(21))
    took_true = np.asarray(ys[:, 1:, 0] == xs[:, 1:, 0])  # else it repeats the fed-back previous value
    assert np.all(np.asarray(ys[:, 0, 0]) == 1.0)  # step 0 always takes the true input
    assert abs(took_true.mean() - 0.3) < 0.04
    per_step = took_true.mean(0)
    assert np.all((per_step > 0) & (per_step < 1))  # samples differ within a step: per-sample coins
    per_sample = took_true.mean(1)
    assert np.all((per_sample > 0) & (per_sample < 1))  # and steps differ within a sample
    # same key reproduces, another key differs
    _, again = teacher.scheduled_sampling(model, params, (), xs, ratio=0.3, key=jax.random.key(21))
    _, other = teacher.scheduled_sampling(model, params, (), xs, ratio=0.3, key=jax.random.key(22))
    np.testing.assert_array_equal(again, ys)
    assert not np.array_equal(other, ys)


def test_exogenous_features_always_come_from_the_true_input():
    E = 2
    model = sj.dense(1)
    w = np.zeros((1 + E, 1), np.float32)
    w[1, 0] = 1.0  # y_t copies the first exogenous feature of its input
    params = {"w": jnp.asarray(w), "b": jnp.zeros((1,))}
    xs = _x(23, (B, T, 1 + E))
    _, ys = teacher.scheduled_sampling(model, params, (), xs, ratio=0.0, key=jax.random.key(24),
                                       exogenous_features=E)
    np.testing.assert_array_equal(ys[:, :, 0], xs[:, :, 1])  # even when every other input is fed back
    # and free running with exogenous features equals a rollout with those columns as exogenous inputs
    model2, params2 = _model(25, out=F - E)
    carry0 = _carry(model2, 26)
    got = teacher.scheduled_sampling(model2, params2, carry0, xs, ratio=0.0, key=jax.random.key(27),
                                     exogenous_features=E)
    exo = np.concatenate([xs[:, 1:, 1:], np.zeros((B, 1, E), np.float32)], 1)
    _close(got, sj.rollout(model2, params2, carry0, xs[:, 0], T, exogenous=exo))


def test_traced_ratio_needs_no_recompile():
    model, params = _model(28)
    xs, traces = _x(29, (B, T, F)), []

    def run(params, ratio):
        traces.append(1)
        return teacher.scheduled_sampling(model, params, model.initial_carry(B), xs, ratio=ratio,
                                          key=jax.random.key(30))[1]

    jitted = jax.jit(run)
    _close(jitted(params, jnp.float32(1.0)), sj.scan(model, params, model.initial_carry(B), xs)[1])
    _close(jitted(params, jnp.float32(0.0)), sj.rollout(model, params, model.initial_carry(B), xs[:, 0], T)[1])
    assert len(traces) == 1


def test_gradients_flow_through_fed_back_outputs():
    model, params = _model(31)
    xs = _x(32, (B, T, F))

    def loss(params, ratio):
        _, ys = teacher.scheduled_sampling(model, params, model.initial_carry(B), xs, ratio=ratio,
                                           key=jax.random.key(33))
        return jnp.mean(ys ** 2)

    g_free = jax.grad(loss)(params, 0.0)
    g_ref = jax.grad(lambda p: jnp.mean(sj.rollout(model, p, model.initial_carry(B), xs[:, 0], T)[1] ** 2))(params)
    _close(g_free, g_ref, atol=1e-5)


def test_objective_trains_with_the_train_steps():
    model, params = _model(34)
    series = np.sin(np.linspace(0, 12, T + 1))[None, :, None] * np.linspace(0.5, 1.5, B)[:, None, None]
    series = np.concatenate([series, np.cos(series), series ** 2], -1).astype(np.float32)  # [B, T+1, 3]
    batch = (series[:, :-1], series[:, 1:])
    optimizer = optax.adam(1e-2)
    obj = teacher.objective(model, losses.mse, ratio=0.5)
    step = train.make_train_step(obj, optimizer)
    state = train.init_state(params, optimizer)
    first = None
    for _ in range(40):
        state, metrics = step(state, batch)
        first = float(metrics["loss"]) if first is None else first
    assert float(metrics["loss"]) < 0.5 * first
    # ratio 1 in a train step is exactly the teacher-forced objective, and evaluation is teacher forced
    tf = train.make_eval_step(train.objective(model, losses.mse))(params, batch)
    ss1 = train.make_train_step(teacher.objective(model, losses.mse, ratio=1.0), optimizer, donate=False)
    _, m1 = ss1(train.init_state(params, optimizer), batch)
    np.testing.assert_allclose(m1["loss"], tf["loss"], rtol=1e-6)
    ev = train.make_eval_step(teacher.objective(model, losses.mse, ratio=0.0))(params, batch)
    np.testing.assert_allclose(ev["loss"], tf["loss"], rtol=1e-6)


def test_objective_in_a_stateful_step_passes_the_carry_on():
    model, params = _model(35)
    xs, ys = _x(36, (B, 2 * T, F)), _x(37, (B, 2 * T, F))
    optimizer = optax.sgd(0.0)  # no update: the carry alone decides the second chunk's loss
    obj = teacher.objective(model, losses.mse, ratio=1.0)
    step = train.make_stateful_train_step(obj, optimizer)
    state = train.init_state(params, optimizer)
    state, carry, _ = step(state, model.initial_carry(B), (xs[:, :T], ys[:, :T]))
    state, carry, m2 = step(state, carry, (xs[:, T:], ys[:, T:]))
    _, whole = sj.scan(model, params, model.initial_carry(B), xs)
    np.testing.assert_allclose(m2["loss"], np.mean((np.asarray(whole[:, T:]) - ys[:, T:]) ** 2), rtol=1e-5)


def test_errors():
    model, params = _model(38)
    carry, xs = model.initial_carry(B), _x(39, (B, T, F))
    where = r"sj.teacher.scheduled_sampling: "
    with pytest.raises(ValueError, match=where + r"key is required"):
        teacher.scheduled_sampling(model, params, carry, xs, ratio=0.5, key=None)
    with pytest.raises(ValueError, match=where + r"ratio .* must be in \[0, 1\]; got 1.5"):
        teacher.scheduled_sampling(model, params, carry, xs, ratio=1.5, key=jax.random.key(0))
    with pytest.raises(ValueError, match=where + r"exogenous_features must be fewer than the input's 3 features"):
        teacher.scheduled_sampling(model, params, carry, xs, ratio=0.5, key=jax.random.key(0), exogenous_features=3)
    with pytest.raises(ValueError, match=where + r"the model's output must fit the input \(5, 3\); got \(5, 2\)"):
        small, p_small = _model(40, out=2)
        teacher.scheduled_sampling(small, p_small, small.initial_carry(B), xs, ratio=0.5, key=jax.random.key(0))
    with pytest.raises(ValueError, match=where + r"xs must be \[batch, time, 3\] .*got \(5, 9, 2\)"):
        teacher.scheduled_sampling(model, params, carry, xs[..., :2], ratio=0.5, key=jax.random.key(0))
    with pytest.raises(TypeError, match=r"sj.teacher.objective: loss must be a callable"):
        teacher.objective(model, "mse", ratio=0.5)
