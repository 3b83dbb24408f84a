"""`sj.rollout` / `sj.forecast`: equal a Python loop of `step` + feedback (carries included) and a float64
NumPy reference, forecast's first output and continuation, exogenous alignment, vmap, compile-once, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqjax as sj
from seqjax import feedback as fb
import reference as ref

B, F, H1, H2, T = 4, 3, 7, 5, 6  # all different so a wrong broadcast cannot pass


def _close(a, b, atol=1e-5):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol), a, b)


def _model(seed=0, out=F, in_features=F):
    model = sj.chain(sj.lstm(H1), sj.lstm(H2), sj.dense(out))
    return model, model.init(jax.random.key(seed), in_features)


def _x(seed, shape):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _carry(model, seed):
    """A non-zero initial carry, so carries that are ignored or reset would show."""
    leaves, treedef = jax.tree.flatten(model.initial_carry(B))
    return jax.tree.unflatten(treedef, [jnp.asarray(_x(seed + i, a.shape)) for i, a in enumerate(leaves)])


def _loop(model, params, carry, x, steps, feedback=lambda y: y):
    """The reference: a Python loop of `step`, feeding each output back."""
    ys, step = [], jax.jit(model.step)
    for _ in range(steps):
        carry, y = step(params, carry, x)
        ys.append(y)
        x = feedback(y)
    return carry, jax.tree.map(lambda *a: jnp.stack(a, 1), *ys)


def test_rollout_equals_python_loop_of_step_carries_included():
    model, params = _model()
    carry0, x0 = _carry(model, 1), _x(2, (B, F))
    carry, ys = sj.rollout(model, params, carry0, x0, 8)
    assert ys.shape == (B, 8, F)
    _close((carry, ys), _loop(model, params, carry0, jnp.asarray(x0), 8))


def test_rollout_equals_float64_numpy_reference():
    model, params = _model(3)
    carry0, x0 = _carry(model, 4), _x(5, (B, F))
    carry, ys = sj.rollout(model, params, carry0, x0, 7)
    p1, p2, pd = ref.np64(params[0]), ref.np64(params[1]), ref.np64(params[2])
    (h1, c1), (h2, c2), _ = (tuple(np.asarray(a, np.float64) for a in c) for c in carry0)
    x, ys_ref = np.asarray(x0, np.float64), []
    for _ in range(7):
        h1, c1 = ref.lstm_step(p1, h1, c1, x)
        h2, c2 = ref.lstm_step(p2, h2, c2, h1)
        x = h2 @ pd["w"] + pd["b"]
        ys_ref.append(x)
    np.testing.assert_allclose(ys, np.stack(ys_ref, 1), atol=2e-5)
    _close(carry, (sj.LSTMCarry(h1, c1), sj.LSTMCarry(h2, c2), ()), atol=2e-5)


def test_rollout_with_callable_feedback_mapping_output_to_input():
    model = sj.chain(sj.gru(H1), sj.dense(2))  # outputs 2 features, takes 3
    params = model.init(jax.random.key(6), F)
    carry0, x0 = _carry(model, 7), _x(8, (B, F))

    def feedback(y):  # a head into the input space: [B, 2] -> [B, 3]
        return jnp.concatenate([y, y[:, :1] * y[:, 1:]], axis=-1)

    _close(sj.rollout(model, params, carry0, x0, 5, feedback), _loop(model, params, carry0, jnp.asarray(x0), 5,
                                                                      feedback))


def test_forecast_first_output_is_scan_output_at_last_context_step():
    model, params = _model(9)
    carry0, context = _carry(model, 10), _x(11, (B, T, F))
    scan_carry, scan_ys = sj.scan(model, params, carry0, context)
    carry, future = sj.forecast(model, params, carry0, context, 5)
    assert future.shape == (B, 5, F)
    np.testing.assert_allclose(future[:, 0], scan_ys[:, -1], atol=1e-5)
    # and the rest is the closed loop started from the warmed-up carry with the first prediction
    _close((carry, future[:, 1:]), _loop(model, params, scan_carry, scan_ys[:, -1], 4))


def test_forecast_continuation_equals_a_longer_forecast():
    model, params = _model(12)
    carry0, context = _carry(model, 13), _x(14, (B, T, F))
    carry_a, future_a = sj.forecast(model, params, carry0, context, 4)
    x_next = fb.next_inputs(None, future_a)[:, -1]
    carry_b, future_b = sj.rollout(model, params, carry_a, x_next, 3)
    carry_long, future_long = sj.forecast(model, params, carry0, context, 7)
    _close((carry_b, jnp.concatenate([future_a, future_b], 1)), (carry_long, future_long))


def test_forecast_with_one_context_step_is_rollout():
    model, params = _model(15)
    carry0, context = _carry(model, 16), _x(17, (B, 1, F))
    _close(sj.forecast(model, params, carry0, context, 4), sj.rollout(model, params, carry0, context[:, 0], 4))


def _copy_model(E):
    """`y = x[:, 1]`: a model whose one output copies the first exogenous input feature."""
    model = sj.dense(1)
    w = np.zeros((1 + E, 1), np.float32)
    w[1, 0] = 1.0
    return model, {"w": jnp.asarray(w), "b": jnp.zeros((1,))}


def test_exogenous_inputs_arrive_at_the_step_after_the_output_they_join():
    E, steps = 2, 5
    model, params = _copy_model(E)
    x0 = _x(18, (B, 1 + E))
    exo = _x(19, (B, steps, E))
    _, ys = sj.rollout(model, params, (), x0, steps, exogenous=exo)
    np.testing.assert_array_equal(ys[:, 0, 0], x0[:, 1])  # the first step sees x0's own known inputs
    np.testing.assert_array_equal(ys[:, 1:, 0], exo[:, :-1, 0])  # ys[:, i] sees exogenous[:, i - 1]
    # next_inputs joins the last row: the input that continues the loop
    np.testing.assert_array_equal(fb.next_inputs(None, ys, exogenous=exo)[:, -1, 1:], exo[:, -1])


def test_forecast_exogenous_row_zero_is_the_first_unknown_step():
    E, steps = 2, 4
    model, params = _copy_model(E)
    context, exo = _x(20, (B, T, 1 + E)), _x(21, (B, steps, E))
    _, future = sj.forecast(model, params, (), context, steps, exogenous=exo)
    np.testing.assert_array_equal(future[:, 0, 0], context[:, -1, 1])
    np.testing.assert_array_equal(future[:, 1:, 0], exo[:, :-1, 0])


def test_exogenous_rollout_of_recurrent_model_equals_loop():
    E, steps = 2, 6
    model = sj.chain(sj.lstm(H1), sj.dense(F - E))
    params = model.init(jax.random.key(22), F)
    carry0, x0, exo = _carry(model, 23), _x(24, (B, F)), _x(25, (B, steps, E))
    ys_ref, carry, x = [], carry0, jnp.asarray(x0)
    for i in range(steps):
        carry, y = model.step(params, carry, x)
        ys_ref.append(y)
        x = jnp.concatenate([y, exo[:, i]], -1)
    _close(sj.rollout(model, params, carry0, x0, steps, exogenous=exo), (carry, jnp.stack(ys_ref, 1)))


def test_pytree_outputs_are_stacked_and_fed_back_through_feedback():
    base, params = _model(26)

    def step(params, carry, x_t, noise=None):
        carry, y = base.step(params, carry, x_t, noise)
        return carry, {"mean": y, "scale": jnp.exp(y[:, :2])}

    model = base._replace(step=step)
    carry0, x0 = _carry(model, 27), _x(28, (B, F))
    carry, ys = sj.rollout(model, params, carry0, x0, 5, lambda y: y["mean"])
    assert ys["mean"].shape == (B, 5, F) and ys["scale"].shape == (B, 5, 2)
    _close((carry, ys), _loop(model, params, carry0, jnp.asarray(x0), 5, lambda y: y["mean"]))
    with pytest.raises(TypeError, match=r"sj.rollout: the model's output must be one array"):
        sj.rollout(model, params, carry0, x0, 5)


def test_vmap_over_an_ensemble_of_params():
    members = [_model(s)[1] for s in (30, 31, 32)]
    model = _model()[0]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *members)
    carry0, x0 = _carry(model, 33), _x(34, (B, F))
    carry, ys = jax.vmap(lambda p: sj.rollout(model, p, carry0, x0, 5))(stacked)
    assert ys.shape == (3, B, 5, F)
    for i, p in enumerate(members):
        _close(jax.tree.map(lambda a: a[i], (carry, ys)), sj.rollout(model, p, carry0, x0, 5))


def test_vmap_over_a_batch_of_initial_carries_in_forecast():
    model, params = _model(35)
    carries = [_carry(model, s) for s in (36, 40, 44, 48, 52)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *carries)
    context = _x(56, (B, T, F))
    carry, future = jax.jit(jax.vmap(lambda c: sj.forecast(model, params, c, context, 4)))(stacked)
    assert future.shape == (5, B, 4, F)
    for i, c in enumerate(carries):
        _close(jax.tree.map(lambda a: a[i], (carry, future)), sj.forecast(model, params, c, context, 4))


def test_compiled_once_per_horizon_and_one_scan_whatever_the_horizon():
    base, params = _model(57)
    traces, step_traces = [], []

    def counting_step(*args, **kwargs):
        step_traces.append(1)
        return base.step(*args, **kwargs)

    model = base._replace(step=counting_step)

    def run(params, carry, x0, steps):
        traces.append(steps)
        return sj.rollout(model, params, carry, x0, steps)

    jitted = jax.jit(run, static_argnames="steps")
    carry0 = model.initial_carry(B)
    for seed in range(3):
        jitted(params, carry0, _x(seed, (B, F)), steps=10)
    assert traces == [10]
    n_short = len(step_traces)
    jitted(params, carry0, _x(0, (B, F)), steps=200)
    assert traces == [10, 200]
    assert len(step_traces) == 2 * n_short  # the step is traced the same few times for 10 and 200 steps
    # the loop over `step` (the layers' fast paths off; on: one native kernel call on CPU) is one lax.scan of
    # length `steps` in the program
    by_steps = sj.chain(*(part._replace(sequence=None) for part in base.config["parts"]))
    jaxpr = jax.make_jaxpr(lambda p, c, x: sj.rollout(by_steps, p, c, x, 37))(params, carry0, _x(0, (B, F)))
    scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    assert [e.params["length"] for e in scans] == [37]


def test_unroll_gives_the_same_numbers():
    model, params = _model(58)
    carry0, context = _carry(model, 59), _x(60, (B, T, F))
    _close(sj.forecast(model, params, carry0, context, 6, unroll=3), sj.forecast(model, params, carry0, context, 6))


def test_error_feedback_output_does_not_fit_input():
    model, params = _model(61, out=2)
    with pytest.raises(ValueError, match=r"sj.rollout: the model's output must fit the input \(4, 3\); got \(4, 2\)"):
        sj.rollout(model, params, model.initial_carry(B), _x(0, (B, F)), 5)
    with pytest.raises(ValueError, match=r"sj.forecast: feedback .*must fit the input \(4, 3\); got \(4, 4\)"):
        sj.forecast(model, params, model.initial_carry(B), _x(0, (B, T, F)), 5, lambda y: jnp.tile(y, 2))
    with pytest.raises(ValueError, match=r"with 2 exogenous features appended"):
        sj.rollout(model, params, model.initial_carry(B), _x(0, (B, F)), 5, exogenous=_x(1, (B, 5, 2)))


def test_error_context_of_wrong_feature_size():
    model, params = _model(62)
    with pytest.raises(ValueError, match=r"sj.forecast: context must be \[batch, time, 3\] .*got \(4, 6, 2\)"):
        sj.forecast(model, params, model.initial_carry(B), _x(0, (B, T, 2)), 5)
    with pytest.raises(ValueError, match=r"sj.forecast: context must be \[batch, time, 3\] .*got \(4, 3\)"):
        sj.forecast(model, params, model.initial_carry(B), _x(0, (B, F)), 5)
    with pytest.raises(ValueError, match=r"sj.rollout: x0 must be \[batch, 3\] .*got \(4, 6, 3\)"):
        sj.rollout(model, params, model.initial_carry(B), _x(0, (B, T, F)), 5)


def test_error_bad_arguments():
    model, params = _model(63)
    carry, x0 = model.initial_carry(B), _x(0, (B, F))
    with pytest.raises(ValueError, match=r"sj.rollout: steps must be an int >= 1"):
        sj.rollout(model, params, carry, x0, 0)
    with pytest.raises(ValueError, match=r"sj.rollout: key is only used by a sampling feedback"):
        sj.rollout(model, params, carry, x0, 3, key=jax.random.key(0))
    with pytest.raises(TypeError, match=r"sj.rollout: feedback must be None, a callable"):
        sj.rollout(model, params, carry, x0, 3, feedback=3)
    with pytest.raises(ValueError, match=r"sj.rollout: exogenous must be \[batch, steps, features\] = \(4, 3, E\)"):
        sj.rollout(model, params, carry, x0, 3, exogenous=_x(0, (B, 4, 1)))
    with pytest.raises(ValueError, match=r"sj.forecast: carry leaves must have shape \(4, 7\) \(batch 4\); got \(5, 7"):
        sj.forecast(model, params, model.initial_carry(5), _x(0, (B, T, F)), 3)
    with pytest.raises(TypeError, match=r"sj.rollout: feedback .* must be floating like the input"):
        sj.rollout(model, params, carry, x0, 3, lambda y: jnp.argmax(y, -1, keepdims=True))
