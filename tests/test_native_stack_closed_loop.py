"""`sj.rollout` of a stack, `chain(lstm | gru, .., lstm | gru, dense)`, on the native stacked closed-loop kernel
(`seqjax.fast.native.stack_closed_loop`).

The kernel is compared with a float64 NumPy closed loop (`reference.stack_closed_loop`), and `sj.rollout` on it
with the same rollout over `step` (the fast paths switched off), at sizes that exercise its edges: batches that
are not a multiple of the 6-row tiles, hidden sizes that differ from layer to layer and are not multiples of
the 16-unit groups (one group: one thread), head widths of one feature and past one 16-lane vector, LSTM and
GRU layers mixed.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import closed_loop_checks as checks
import reference as ref
import seqjax as sj
from seqjax.fast import native
from seqjax.fast import plan as plan_module

KERNELS = {"lstm": native.LSTM, "gru": native.GRU}
MAKE = {"lstm": sj.lstm, "gru": sj.gru}


def _layers(b, f, cells, seed=0, scale=0.4):
    """Per layer `(name, params, carry)` with random params and a non-zero carry, the head `w_d, b_d` and `x0`,
    float32; `cells`: `(name, hidden)` bottom first."""
    rng = np.random.default_rng(seed + 100)
    layers, width = [], f
    for i, (name, h) in enumerate(cells):
        params = {k: jnp.asarray(v) for k, v in ref.random_params(name, seed + i, width, h).items()}
        carry = tuple(jnp.asarray(rng.normal(0, scale, (b, h)), jnp.float32) for _ in range(2 if name == "lstm"
                                                                                              else 1))
        layers.append((name, params, carry))
        width = h
    w_d, b_d, x0 = (jnp.asarray(rng.normal(0, scale, s), jnp.float32) for s in ((width, f), (f,), (b, f)))
    return layers, w_d, b_d, x0


def _weights(name, params):
    return ((params["w_x"], params["w_h"], params["b"], None) if name == "lstm"
            else (params["w_x"], params["w_h"], params["b_x"], params["b_h"]))


def _kernel_call(layers, w_d, b_d, x0, steps, threads):
    """`native.stack_closed_loop` of `_layers`' layers, jitted."""
    names = [name for name, _, _ in layers]

    def run(arrays, w_d, b_d, x0):
        stack = [(KERNELS[name], _weights(name, p), c) for name, (p, c) in zip(names, arrays)]
        return native.stack_closed_loop(stack, x0, w_d, b_d, steps, threads=threads)

    return jax.jit(run)([(p, c) for _, p, c in layers], w_d, b_d, x0)


CASES = [(7, 3, (("lstm", 21), ("lstm", 37)), 9), (13, 1, (("gru", 37), ("lstm", 16), ("gru", 20)), 4),
         (2, 17, (("lstm", 32), ("gru", 48)), 6), (20, 2, (("lstm", 40), ("lstm", 18)), 11)]


@pytest.mark.parametrize("b, f, cells, steps", CASES)
@pytest.mark.parametrize("threads", [0, 1])
def test_kernel_matches_float64_numpy(b, f, cells, steps, threads):
    layers, w_d, b_d, x0 = _layers(b, f, cells)
    carries, ys = _kernel_call(layers, w_d, b_d, x0, steps, threads)
    ys_ref, carries_ref = ref.stack_closed_loop([(n, p) for n, p, _ in layers], w_d, b_d, x0,
                                                [c for _, _, c in layers], steps)
    assert ys.shape == (b, steps, f)
    np.testing.assert_allclose(ys, ys_ref, atol=5e-6, rtol=1e-5)
    assert [len(c) for c in carries] == [len(c) for c in carries_ref]
    for got, want in zip(carries, carries_ref):
        for a, e in zip(got, want):
            np.testing.assert_allclose(a, e, atol=5e-6, rtol=1e-5)


def test_one_thread_and_all_give_the_same_bits():
    layers, w_d, b_d, x0 = _layers(9, 4, (("lstm", 80), ("gru", 64)), seed=3)
    jax.tree.map(np.testing.assert_array_equal, _kernel_call(layers, w_d, b_d, x0, 30, 1),
                 _kernel_call(layers, w_d, b_d, x0, 30, 0))


def _model(f, cells, seed=0, batch=5, **dense):
    """`chain(*cells, dense(f))` with random params and a non-zero carry; `cells`: `(name, hidden)`."""
    model = sj.chain(*(MAKE[name](h) for name, h in cells), sj.dense(f, **dense))
    layers, w_d, b_d, _ = _layers(batch, f, cells, seed)
    head = {"w": w_d, "b": b_d} if dense.get("use_bias", True) else {"w": w_d}
    carry = tuple(part._replace(**dict(zip(part._fields, c)))
                  for part, (_, _, c) in zip(model.initial_carry(batch)[:-1], layers)) + ((),)
    return model, tuple(p for _, p, _ in layers) + (head,), carry


TARGET = native.TARGET_STACK_CLOSED_LOOP


@pytest.mark.parametrize("cells, use_bias", [((("lstm", 21), ("lstm", 34)), True),
                                             ((("gru", 18), ("lstm", 21), ("gru", 33)), False)])
def test_rollout_runs_the_kernel_and_equals_the_loop_over_step(cells, use_bias):
    model, params, carry = _model(3, cells, seed=1, use_bias=use_bias)
    # two float32 orders of roundings (the fold) through up to three layers of random weights
    checks.check_rollout(model, params, carry, _layers(5, 3, cells, seed=2)[3], TARGET, atol=1e-5)


def test_forecast_runs_the_kernel_after_its_warm_up():
    model, params, carry = _model(4, (("lstm", 19), ("lstm", 24)), seed=4)
    context = jnp.asarray(np.random.default_rng(5).normal(size=(5, 8, 4)), jnp.float32)
    checks.check_forecast(model, params, carry, context, TARGET)


def test_a_rollout_in_two_calls_with_the_carry_passed_on_equals_one_call():
    cells = (("gru", 33), ("lstm", 17))
    model, params, carry = _model(2, cells, seed=6)
    checks.check_two_calls(model, params, carry, _layers(5, 2, cells, seed=7)[3])


def test_gradients_through_the_rollout_are_the_loops():
    cells = (("lstm", 18), ("gru", 20))
    model, params, carry = _model(3, cells, seed=8)
    checks.check_gradients(model, params, carry, _layers(5, 3, cells, seed=9)[3], TARGET,
                           lambda new_carry: jnp.sum(jnp.cos(new_carry[0].c)) + jnp.sum(new_carry[1].h ** 2))


def test_forward_mode_derivatives_through_the_rollout_are_the_loops():
    cells = (("gru", 19), ("lstm", 22))
    model, params, carry = _model(2, cells, seed=15)
    checks.check_forward_mode(model, params, carry, _layers(5, 2, cells, seed=16)[3], TARGET)


def test_vmap_over_an_ensemble_of_params():
    cells = (("lstm", 17), ("lstm", 20))
    model, params, carry = _model(3, cells, seed=10)
    members = [_model(3, cells, seed=s)[1] for s in (12, 13, 14)]
    checks.check_vmap(model, members, carry, _layers(5, 3, cells, seed=11)[3])


@pytest.mark.parametrize("what", ["dense in between", "bfloat16 matmuls", "dense activation", "simple_rnn",
                                  "large layer step", "kernel unavailable"])
def test_what_the_kernel_does_not_run(what, monkeypatch):
    """Where the stacked kernel does not apply, `sj.rollout` steps through `step` with the same numbers."""
    f, h, batch = 3, 16, 5
    parts = [sj.lstm(h), sj.lstm(h), sj.dense(f)]
    if what == "dense in between":
        parts.insert(1, sj.dense(h))
    elif what == "bfloat16 matmuls":
        parts[1] = sj.lstm(h, matmul_dtype=jnp.bfloat16)
    elif what == "dense activation":
        parts[2] = sj.dense(f, activation="tanh")
    elif what == "simple_rnn":
        parts[0] = sj.simple_rnn(h)
    elif what == "large layer step":  # B 40, H 320: the upper layer's step is 32.8M multiply-adds
        batch, h = 40, 320
        parts = [sj.lstm(h), sj.lstm(h), sj.dense(f)]
    elif what == "kernel unavailable":
        monkeypatch.setattr(native, "available", lambda: False)
    model = sj.chain(*parts)
    params = model.init(jax.random.key(0), f)
    carry, x0 = model.initial_carry(batch), jnp.ones((batch, f)) * 0.3
    steps = 3 if what == "large layer step" else 4
    rollout = lambda m: lambda p, c, x: sj.rollout(m, p, c, x, steps)  # noqa: E731
    assert not checks.runs(TARGET, rollout(model), params, carry, x0)
    by_steps = jax.jit(rollout(checks.by_steps(model)))
    checks.close(jax.jit(rollout(model))(params, carry, x0), by_steps(params, carry, x0), atol=1e-6)


def test_the_plan_runs_the_kernel_below_a_large_layer_step():
    threads = plan_module.stack_closed_loop_threads
    assert threads(64, 200, [(8, 128, "lstm"), (128, 128, "lstm")]) == 0  # 12.8M multiply-adds a step: all cores
    assert threads(4, 200, [(3, 8, "lstm"), (8, 8, "gru")]) == 1  # 2.9k a step: one core
    assert threads(32, 20, [(2, 32, "lstm"), (32, 32, "lstm")]) == 1  # 402k a step, 8.0M in all: one core
    assert threads(32, 21, [(2, 32, "lstm"), (32, 32, "lstm")]) == 0  # 8.4M in all
    assert threads(64, 200, [(8, 256, "lstm"), (256, 256, "lstm")]) is None  # the upper layer's step: 33.6M
    assert threads(192, 200, [(8, 128, "lstm"), (128, 128, "lstm")]) == 0  # 25.2M
    assert threads(64, 200, [(8, 256, "gru"), (256, 256, "gru")]) == 0  # a GRU's three blocks: 25.2M
    assert threads(128, 200, [(8, 192, "gru"), (192, 192, "gru")]) is None  # 28.3M
    assert threads(32, 200, [(8, 128, "lstm"), (128, 128, "gru"), (128, 128, "lstm")]) == 0


def test_each_stacked_call_runs_on_the_cores_its_plan_gives():
    model = sj.chain(sj.lstm(20), sj.lstm(20), sj.dense(2))
    params, carry, x0 = model.init(jax.random.key(0), 2), model.initial_carry(40), jnp.zeros((40, 2))
    text = lambda steps: jax.jit(lambda p, c, x: sj.rollout(model, p, c, x, steps)).lower(  # noqa: E731
        params, carry, x0).as_text()
    found = lambda steps: re.findall(r"custom_call @seqjax_stack_closed_loop\(.*?threads = (\d+)",  # noqa: E731
                                     text(steps))
    # B 40 and two layers of 20 units: 70,400 + 128,000 multiply-adds a step, all cores from 43 steps (2^23)
    assert plan_module.stack_closed_loop_threads(40, 43, [(2, 20, "lstm"), (20, 20, "lstm")]) == 0
    assert found(43) == ["0"] and found(42) == ["1"]


def test_bad_layers_are_clear_errors():
    layers, w_d, b_d, x0 = _layers(4, 3, (("lstm", 8), ("gru", 6)))
    stack = [(KERNELS[name], _weights(name, p), c) for name, p, c in layers]
    with pytest.raises(ValueError, match=r"stack_closed_loop: layers must hold at least two .* got 1"):
        native.stack_closed_loop(stack[:1], x0, w_d, b_d, 3)
    with pytest.raises(ValueError, match=r"layer 1 takes inputs of width 8 .* got w_x, w_h and carry of shapes"):
        native.stack_closed_loop([stack[0], stack[0]], x0, jnp.zeros((8, 3)), b_d, 3)
    with pytest.raises(ValueError, match=r"layer 1 must be \(LSTM, weights, \(h, c\)\) or \(GRU, weights, \(h,\)\)"):
        native.stack_closed_loop([stack[0], (native.LSTM, *stack[1][1:])], x0, w_d, b_d, 3)
    with pytest.raises(ValueError, match=r"the head must map the top layer's 6 units to the 3 features"):
        native.stack_closed_loop(stack, x0, w_d[:, :2], b_d[:2], 3)


def test_the_kernel_unavailable_is_a_clear_error(monkeypatch):
    layers, w_d, b_d, x0 = _layers(3, 2, (("lstm", 4), ("lstm", 5)))
    monkeypatch.setattr(native, "_load", lambda: "switched off (SEQJAX_NATIVE=0)")
    with pytest.raises(RuntimeError, match=r"the native kernel seqjax_stack_closed_loop is unavailable: switched"):
        _kernel_call(layers, w_d, b_d, x0, 3, 0)
