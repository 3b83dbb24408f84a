"""`sj.rollout` of `chain(lstm, dense)` on the native closed-loop kernel (`seqjax.fast.native.lstm_closed_loop`).

The kernel is compared with a float64 NumPy closed loop (`reference.lstm_closed_loop`) and `sj.rollout` on it
with the same rollout over `step` (the fast path switched off), at sizes that exercise its edges: batches
that are not a multiple of the 6-row tiles, hidden sizes that are not a multiple of the 16-unit groups,
head widths of one feature, past one 16-lane vector and past one tile of four vectors.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import closed_loop_checks as checks
import reference as ref
import seqjax as sj
import seqjax.fast._common as fast_common
from seqjax.fast import native
from seqjax.fast import plan as plan_module
from seqjax.fast.plan import Plan

ON = Plan(native_closed_loop=True)
OFF = Plan()


def _arrays(b, f, h, seed=0, scale=0.4):
    """Layer params, head `w_d [H, F]`, `b_d [F]`, `x0 [B, F]` and a non-zero carry, float32."""
    rng = np.random.default_rng(seed + 100)
    params = {k: jnp.asarray(v) for k, v in ref.random_params("lstm", seed, f, h).items()}
    w_d, b_d, x0, h0, c0 = (jnp.asarray(rng.normal(0, scale, s), jnp.float32)
                            for s in ((h, f), (f,), (b, f), (b, h), (b, h)))
    return params, w_d, b_d, x0, h0, c0


def _model(f, h, seed=0, **dense):
    """`chain(lstm(h), dense(f))` with random params and a non-zero carry `[B=5]`."""
    model = sj.chain(sj.lstm(h), sj.dense(f, **dense))
    params, w_d, b_d, _, h0, c0 = _arrays(5, f, h, seed)
    head = {"w": w_d, "b": b_d} if dense.get("use_bias", True) else {"w": w_d}
    carry = (model.initial_carry(5)[0]._replace(h=h0, c=c0), ())
    return model, (params, head), carry


@pytest.mark.parametrize("b, f, h, steps", [(7, 3, 5, 9), (13, 1, 37, 4), (6, 17, 32, 1), (2, 70, 20, 6),
                                            (20, 2, 48, 11)])
@pytest.mark.parametrize("threads", [0, 1])
def test_kernel_matches_float64_numpy(b, f, h, steps, threads):
    params, w_d, b_d, x0, h0, c0 = _arrays(b, f, h)
    run = jax.jit(lambda p, w_d, b_d, x0, h0, c0: native.lstm_closed_loop(
        p["w_x"], p["w_h"], p["b"], h0, c0, x0, w_d, b_d, steps, threads=threads))
    (h_k, c_k), ys = run(params, w_d, b_d, x0, h0, c0)
    ys_ref, h_ref, c_ref = ref.lstm_closed_loop(params, w_d, b_d, x0, h0, c0, steps)
    assert ys.shape == (b, steps, f)
    np.testing.assert_allclose(ys, ys_ref, atol=4e-6, rtol=1e-5)
    np.testing.assert_allclose(h_k, h_ref, atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(c_k, c_ref, atol=4e-6, rtol=1e-5)


def test_one_thread_and_all_give_the_same_bits():
    params, w_d, b_d, x0, h0, c0 = _arrays(9, 4, 80, seed=3)

    def run(threads):
        return native.lstm_closed_loop(params["w_x"], params["w_h"], params["b"], h0, c0, x0, w_d, b_d, 30,
                                       threads=threads)

    jax.tree.map(np.testing.assert_array_equal, run(1), run(0))


@pytest.mark.parametrize("use_bias", [True, False])
def test_rollout_runs_the_kernel_and_equals_the_loop_over_step(use_bias):
    model, params, carry = _model(3, 21, seed=1, use_bias=use_bias)
    checks.check_rollout(model, params, carry, _arrays(5, 3, 21, seed=2)[3], native.TARGET_CLOSED_LOOP)


def test_forecast_runs_the_kernel_after_its_warm_up():
    model, params, carry = _model(4, 19, seed=4)
    context = jnp.asarray(np.random.default_rng(5).normal(size=(5, 8, 4)), jnp.float32)
    checks.check_forecast(model, params, carry, context, native.TARGET_CLOSED_LOOP)


def test_a_rollout_in_two_calls_with_the_carry_passed_on_equals_one_call():
    model, params, carry = _model(2, 33, seed=6)
    checks.check_two_calls(model, params, carry, _arrays(5, 2, 33, seed=7)[3])


def test_gradients_through_the_rollout_are_the_loops():
    model, params, carry = _model(3, 18, seed=8)
    checks.check_gradients(model, params, carry, _arrays(5, 3, 18, seed=9)[3], native.TARGET_CLOSED_LOOP,
                           lambda new_carry: jnp.sum(jnp.cos(new_carry[0].c)))


def test_forward_mode_derivatives_through_the_rollout_are_the_loops():
    model, params, carry = _model(2, 19, seed=15)
    checks.check_forward_mode(model, params, carry, _arrays(5, 2, 19, seed=16)[3], native.TARGET_CLOSED_LOOP)


def test_vmap_over_an_ensemble_of_params():
    model, params, carry = _model(3, 17, seed=10)
    members = [_model(3, 17, seed=s)[1] for s in (12, 13, 14)]
    checks.check_vmap(model, members, carry, _arrays(5, 3, 17, seed=11)[3])


@pytest.mark.parametrize("what", ["feedback", "exogenous", "dense activation", "bfloat16 matmuls", "plan",
                                  "kernel unavailable"])
def test_what_the_kernel_does_not_run(what, monkeypatch):
    """Where the closed-loop kernel does not apply, `sj.rollout` steps through `step` with the same numbers."""
    f, h = 3, 16
    lstm, dense = sj.lstm(h), sj.dense(f)
    kwargs = {}
    if what == "dense activation":
        dense = sj.dense(f, activation="tanh")
    elif what == "bfloat16 matmuls":
        lstm = sj.lstm(h, matmul_dtype=jnp.bfloat16)
    elif what == "feedback":
        kwargs = {"feedback": lambda y: 0.5 * y}
    elif what == "exogenous":
        dense = sj.dense(f - 1)
        kwargs = {"exogenous": jnp.ones((5, 4, 1))}
    elif what == "plan":
        monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: OFF)
    elif what == "kernel unavailable":
        monkeypatch.setattr(native, "available", lambda: False)
    model = sj.chain(lstm, dense)
    params = model.init(jax.random.key(0), f)
    carry, x0 = model.initial_carry(5), _arrays(5, f, h)[3]
    rollout = lambda m: lambda p, c, x: sj.rollout(m, p, c, x, 4, **kwargs)  # noqa: E731
    assert not checks.runs(native.TARGET_CLOSED_LOOP, rollout(model), params, carry, x0)
    checks.close(jax.jit(rollout(model))(params, carry, x0),
                 jax.jit(rollout(checks.by_steps(model)))(params, carry, x0), atol=1e-6)


def test_the_plan_chooses_the_kernel_for_closed_loops_on_cpu():
    tiny = plan_module.plan_for(4, 200, 3, 8, "lstm", backend="cpu")
    assert tiny.native_closed_loop and tiny.native_threads == tiny.native_eval_threads == 1 and not tiny.native
    assert plan_module.plan_for(4, 100_000, 3, 8, "lstm", backend="cpu").native_eval_threads == 1  # steps too short
    small = plan_module.plan_for(32, 200, 2, 32, "lstm", backend="cpu")  # 200 steps of the bench's small rollout
    assert small.native_closed_loop and small.native_eval_threads == 0 and small.native_threads == 1
    assert plan_module.plan_for(32, 20, 2, 32, "lstm", backend="cpu").native_eval_threads == 1
    medium = plan_module.plan_for(64, 200, 8, 128, "lstm", backend="cpu")
    assert medium.native_closed_loop and medium.native_threads == medium.native_eval_threads == 0 and medium.native
    assert not plan_module.plan_for(64, 200, 8, 128, "simple_rnn", backend="cpu").native_closed_loop
    assert not plan_module.plan_for(64, 200, 8, 128, "lstm", backend="gpu").native_closed_loop


def test_the_kernel_unavailable_is_a_clear_error(monkeypatch):
    params, w_d, b_d, x0, h0, c0 = _arrays(3, 2, 4)
    monkeypatch.setattr(native, "_load", lambda: "switched off (SEQJAX_NATIVE=0)")
    with pytest.raises(RuntimeError, match=r"the native kernel seqjax_lstm_closed_loop is unavailable: switched off"):
        native.lstm_closed_loop(params["w_x"], params["w_h"], params["b"], h0, c0, x0, w_d, b_d, 3)


def _kernel_threads(fn, *args) -> dict:
    """{custom call target: its `threads` attribute} of `jit(fn)(*args)`'s lowering."""
    text = jax.jit(fn).lower(*args).as_text()
    return {target: int(n) for target, n in re.findall(r"custom_call @(\w+)\(.*?threads = (\d+)", text)}


def test_each_kernel_call_runs_on_the_cores_its_plan_gives():
    # B 40, F 2, H 20: 70,400 multiply-adds a step, one core a step (a plan given B and H swapped would put
    # 100 steps on all cores); evaluation calls from 2^23 in all on all cores, training on one at every length
    model = sj.chain(sj.lstm(20), sj.dense(2))
    params, carry = model.init(jax.random.key(0), 2), model.initial_carry(40)
    x0 = jnp.zeros((40, 2))
    assert _kernel_threads(lambda p, c, x: sj.rollout(model, p, c, x, 200), params, carry, x0) == {
        native.TARGET_CLOSED_LOOP: 0}
    assert _kernel_threads(lambda p, c, x: sj.rollout(model, p, c, x, 20), params, carry, x0) == {
        native.TARGET_CLOSED_LOOP: 1}
    for steps, threads in ((150, 0), (100, 1)):
        xs = jnp.zeros((40, steps, 2))
        assert _kernel_threads(lambda p, c, xs: sj.scan(model, p, c, xs)[1], params, carry, xs) == {
            native.TARGET_HEAD: threads}
        loss = lambda p, c, xs: jnp.mean(sj.scan(model, p, c, xs)[1] ** 2)  # noqa: E731
        assert _kernel_threads(jax.grad(loss), params, carry, xs) == {native.TARGET_TRAIN: 1,
                                                                      native.TARGET_BACKWARD: 1}
