"""The native CPU kernels for the GRU (`seqjax.fast.native.GRU`): numbers, dispatch and gradients.

The kernels are compared with the float64 NumPy GRU of `reference.py` (forward, backpropagation through time,
the head inside, the closed loop) and `sj.scan` / `sj.rollout` on them with the reference loop over `step`, at
sizes that exercise their edges: batches that are not a multiple of the 6-row tiles, hidden sizes that are not
a multiple of the 16-unit groups (and smaller than one), input features past one 16-lane vector, one step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference as ref
import seqjax as sj
import seqjax.fast._common as fast_common
from seqjax.fast import native
from seqjax.fast import plan as plan_module
from seqjax.fast.plan import Plan

NATIVE_TRAIN = Plan(native=True, native_head=True, native_train=True, native_closed_loop=True)
SIZES = [(7, 9, 3, 5), (13, 4, 2, 37), (6, 1, 17, 32), (20, 6, 3, 48)]


def _inputs(b, t, f, h, seed=0):
    """GRU params, `xs [B, T, F]` and a non-zero `h0 [B, H]`, float32."""
    rng = np.random.default_rng(seed + 100)
    params = {k: jnp.asarray(v) for k, v in ref.random_params("gru", seed, f, h).items()}
    xs = jnp.asarray(rng.normal(size=(b, t, f)), jnp.float32)
    return params, xs, jnp.asarray(rng.normal(0, 0.5, (b, h)), jnp.float32)


def _weights(p):
    return p["w_x"], p["w_h"], p["b_x"], p["b_h"]


def _close(got, want, scale=1.0, atol=2e-6):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=atol * max(1.0, scale), rtol=1e-5)


@pytest.mark.parametrize("b, t, f, h", SIZES)
@pytest.mark.parametrize("batch_major, threads", [(True, 0), (False, 1)])
def test_forward_and_backward_kernels_match_float64_numpy(b, t, f, h, batch_major, threads):
    """`gru_forward` (also training's forward pass) then `gru_backward` against the float64 GRU and its
    backpropagation through time: outputs, final `h`, weight, bias, initial-carry and input gradients."""
    params, xs, h0 = _inputs(b, t, f, h)
    rng = np.random.default_rng(7)
    dys = jnp.asarray(rng.normal(size=(b, t, h)), jnp.float32)
    dh = jnp.asarray(rng.normal(size=(b, h)), jnp.float32)

    @jax.jit
    def run(p, h0, xs, dys, dh):
        xs_TB = jnp.swapaxes(xs, 0, 1)
        (h_k,), ys = native.gru_forward(*_weights(p), h0, xs_TB, batch_major=batch_major, threads=threads)
        d = dys if batch_major else jnp.swapaxes(dys, 0, 1)
        grads, (dh0,), dxs = native.gru_backward(*_weights(p), h0, xs_TB, ys, d, dh, batch_major=batch_major,
                                                 threads=threads)
        return h_k, ys if batch_major else jnp.swapaxes(ys, 0, 1), grads, dh0, jnp.swapaxes(dxs, 0, 1)

    h_k, ys, grads, dh0, dxs = run(params, h0, xs, dys, dh)
    ys_ref, h_ref = ref.run_gru(params, np.asarray(xs), h0)
    _close(ys, ys_ref)
    _close(h_k, h_ref)
    g, dh0_ref, dxs_ref = ref.gru_backward(params, np.asarray(xs), h0, dys, dh)
    for got, want in zip(grads + (dh0, dxs), (g["w_x"], g["w_h"], g["b_x"], g["b_h"], dh0_ref, dxs_ref)):
        _close(got, want, np.abs(want).max(), atol=2e-5)


@pytest.mark.parametrize("b, t, f, h, out", [(7, 9, 3, 5, 1), (13, 4, 2, 37, 17), (6, 3, 4, 32, 70)])
def test_forward_with_the_head_inside_matches_float64_numpy(b, t, f, h, out):
    """`layer_forward` with an affine head: the float64 GRU followed by the head, only its outputs written."""
    params, xs, h0 = _inputs(b, t, f, h)
    rng = np.random.default_rng(7)
    w_d, b_d = (jnp.asarray(rng.normal(0, 0.5, s), jnp.float32) for s in ((h, out), (out,)))
    run = jax.jit(lambda p, h0, xs, w_d, b_d: native.layer_forward(
        native.GRU, _weights(p), (h0,), jnp.swapaxes(xs, 0, 1), head=(w_d, b_d)))
    (h_k,), ys = run(params, h0, xs, w_d, b_d)
    hs, h_ref = ref.run_gru(params, np.asarray(xs), h0)
    _close(ys, hs @ np.asarray(w_d, np.float64) + np.asarray(b_d, np.float64), atol=1e-5)
    _close(h_k, h_ref)


@pytest.mark.parametrize("b, f, h, steps", [(7, 3, 5, 9), (13, 1, 37, 4), (6, 17, 32, 1), (2, 70, 20, 6)])
def test_closed_loop_kernel_matches_float64_numpy(b, f, h, steps):
    """`layer_closed_loop` (the fed-back input's projection folded into the recurrent weights, its candidate
    block as a fourth block of `h`'s) against the float64 closed loop of the GRU and the head."""
    params, _, h0 = _inputs(b, 1, f, h)
    rng = np.random.default_rng(8)
    w_d, b_d, x0 = (jnp.asarray(rng.normal(0, 0.4, s), jnp.float32) for s in ((h, f), (f,), (b, f)))
    run = jax.jit(lambda p, h0, x0, w_d, b_d: native.layer_closed_loop(native.GRU, _weights(p), (h0,), x0, w_d,
                                                                        b_d, steps))
    (h_k,), ys = run(params, h0, x0, w_d, b_d)
    ys_ref, h_ref = ref.gru_closed_loop(params, w_d, b_d, x0, h0, steps)
    _close(ys, ys_ref, atol=1e-5)
    _close(h_k, h_ref, atol=1e-5)


def test_one_thread_and_all_give_the_same_bits():
    params, xs, h0 = _inputs(9, 8, 3, 40)  # three groups: split unevenly over two threads
    dys = jnp.asarray(np.random.default_rng(8).normal(size=(9, 8, 40)), jnp.float32)
    w_d = jnp.asarray(np.random.default_rng(9).normal(0, 0.3, (40, 3)), jnp.float32)

    def run(n):
        xs_TB = jnp.swapaxes(xs, 0, 1)
        carry, ys = native.gru_forward(*_weights(params), h0, xs_TB, threads=n)
        return (carry, ys, native.gru_backward(*_weights(params), h0, xs_TB, ys, dys, h0, threads=n),
                native.layer_closed_loop(native.GRU, _weights(params), (h0,), xs[:, 0], w_d, w_d[0], 7, threads=n))

    for a, b in zip(jax.tree.leaves(jax.jit(lambda: run(0))()), jax.tree.leaves(jax.jit(lambda: run(1))())):
        np.testing.assert_array_equal(a, b)


def _loss(model, params, carry, xs):
    """A loss that weighs every output and the final `h` differently (so no gradient is symmetric)."""
    new_carry, ys = sj.scan(model, params, carry, xs)
    w = jnp.sin(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
    return jnp.sum(w * ys) + sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(new_carry))


@pytest.mark.parametrize("stacked", [False, True])
def test_scan_of_a_chain_runs_the_kernels_with_the_reference_numbers(stacked, monkeypatch):
    """`sj.scan` of `chain(gru, dense)` (and a stacked `chain(gru, gru, dense)`, whose upper layer's input gradient
    reaches the lower one) lowers to the GRU kernels, evaluated and under a gradient, and gives the reference
    loops' outputs and gradients (params, initial carry, inputs)."""
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: NATIVE_TRAIN)
    parts = (sj.gru(18), sj.gru(23), sj.dense(2)) if stacked else (sj.gru(21), sj.dense(2))
    model = sj.chain(*parts)
    params = model.init(jax.random.key(4), 3)
    xs = jnp.asarray(np.random.default_rng(9).normal(size=(6, 11, 3)), jnp.float32)
    carry = jax.tree.map(lambda a: a + 0.3, model.initial_carry(6))
    evaluate = jax.jit(lambda p, c, x: sj.scan(model, p, c, x))
    assert f"@{native.TARGET_GRU_HEAD}(" in evaluate.lower(params, carry, xs).as_text()
    grad = jax.jit(jax.grad(lambda p, c, x: _loss(model, p, c, x), argnums=(0, 1, 2)))
    assert grad.lower(params, carry, xs).as_text().count(f"@{native.TARGET_GRU_BACKWARD}(") == len(parts) - 1

    reference = sj.chain(*(part._replace(sequence=None) for part in parts))
    for a, b in zip(jax.tree.leaves(evaluate(params, carry, xs)), jax.tree.leaves(sj.scan(reference, params,
                                                                                          carry, xs))):
        np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-5)
    g_ref = jax.grad(lambda p, c, x: _loss(reference, p, c, x), argnums=(0, 1, 2))(params, carry, xs)
    for a, b in zip(jax.tree.leaves(grad(params, carry, xs)), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)


def test_a_layer_in_chunks_with_the_carry_passed_on_equals_the_whole(monkeypatch):
    """Two calls with the carry passed on, evaluated and differentiated on the kernels: the whole sequence's
    outputs and gradients."""
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: NATIVE_TRAIN)
    cell = sj.gru(19)
    params, xs, h0 = _inputs(7, 12, 2, 19)

    def run(p, x, split):
        carry, parts = cell.initial_carry(7)._replace(h=h0), []
        for lo, hi in ((0, split), (split, 12)) if split else ((0, 12),):
            carry, ys = sj.scan(cell, p, carry, x[:, lo:hi])
            parts.append(ys)
        return jnp.concatenate(parts, axis=1), carry.h

    def loss(p, x, split):
        ys, h = run(p, x, split)
        return jnp.sum(jnp.sin(jnp.arange(ys.size).reshape(ys.shape)) * ys) + jnp.sum(jnp.cos(h))

    for a, b in zip(jax.jit(lambda p, x: run(p, x, 5))(params, xs), jax.jit(lambda p, x: run(p, x, 0))(params, xs)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    chunked = jax.jit(jax.grad(lambda p, x: loss(p, x, 5), argnums=(0, 1)))(params, xs)
    whole = jax.jit(jax.grad(lambda p, x: loss(p, x, 0), argnums=(0, 1)))(params, xs)
    for a, b in zip(jax.tree.leaves(chunked), jax.tree.leaves(whole)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_rollout_runs_the_closed_loop_kernel_with_the_loop_over_step_numbers(monkeypatch):
    """`sj.rollout` of `chain(gru, dense)` fed back unchanged: one closed-loop kernel call, the values, carry and
    gradients of the loop over `step`."""
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: NATIVE_TRAIN)
    model = sj.chain(sj.gru(21), sj.dense(3))
    params = model.init(jax.random.key(2), 3)
    by_steps = sj.chain(sj.gru(21)._replace(sequence=None), sj.dense(3))
    carry = jax.tree.map(lambda a: a - 0.2, model.initial_carry(5))
    x0 = jnp.asarray(np.random.default_rng(3).normal(size=(5, 3)), jnp.float32)

    def run(m, p, x):
        return sj.rollout(m, p, carry, x, 13)

    assert f"@{native.TARGET_GRU_CLOSED_LOOP}(" in jax.jit(lambda p, x: run(model, p, x)).lower(params, x0).as_text()
    for a, b in zip(jax.tree.leaves(jax.jit(lambda p, x: run(model, p, x))(params, x0)),
                    jax.tree.leaves(run(by_steps, params, x0))):
        np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-5)
    loss = lambda m: lambda p, x: jnp.sum(jnp.sin(run(m, p, x)[1]))  # noqa: E731
    for a, b in zip(jax.tree.leaves(jax.jit(jax.grad(loss(model), argnums=(0, 1)))(params, x0)),
                    jax.tree.leaves(jax.grad(loss(by_steps), argnums=(0, 1))(params, x0))):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("what", ["reset_after=False", "float64", "bfloat16 matmuls"])
def test_what_the_kernels_do_not_run(what, monkeypatch):
    """The GRU without `reset_after` (another maths), float64 and mixed precision run without the kernels, with
    the reference numbers."""
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: NATIVE_TRAIN)
    dtype = jnp.float64 if what == "float64" else jnp.float32
    cell = {"reset_after=False": lambda: sj.gru(6, reset_after=False), "float64": lambda: sj.gru(6, dtype=dtype),
            "bfloat16 matmuls": lambda: sj.gru(6, matmul_dtype=jnp.bfloat16)}[what]()
    with jax.enable_x64(what == "float64"):
        params = jax.tree.map(lambda a: a.astype(dtype), cell.init(jax.random.key(1), 2))
        xs = jnp.asarray(np.random.default_rng(2).normal(size=(3, 5, 2)), dtype)
        run = jax.jit(lambda p, x: sj.scan(cell, p, cell.initial_carry(3, dtype), x)[1])
        assert "seqjax_gru" not in run.lower(params, xs).as_text()
        ys = run(params, xs)
    tol = 5e-2 if what == "bfloat16 matmuls" else 2e-6
    np.testing.assert_allclose(ys, ref.run_gru(params, np.asarray(xs, np.float64),
                                               reset_after=what != "reset_after=False")[0], atol=tol)


def test_plan_chooses_the_gru_kernels_where_they_were_measured_faster():
    choose = lambda b, t, f, h: plan_module.plan_for(b, t, f, h, "gru", backend="cpu", huge=False)  # noqa: E731
    for size in [(32, 50, 2, 32), (64, 100, 8, 128), (128, 200, 32, 256), (16, 2000, 8, 128), (1024, 50, 8, 128)]:
        plan = choose(*size)
        assert plan.native and plan.native_train and plan.native_closed_loop
    assert choose(32, 50, 2, 32).use_reference  # where the kernels do not run, the reference loop
    small = choose(5, 7, 3, 20)
    assert not small.native and small.native_closed_loop and small.native_threads == 1
    # training keeps the outputs only: twice the LSTM's sequence length fits the same memory
    assert choose(8, 6_000, 8, 256).native_train and not plan_module.plan_for(8, 6_000, 8, 256, "lstm",
                                                                              backend="cpu").native_train
    assert not choose(8, 10_000, 8, 256).native_train
    assert not plan_module.plan_for(64, 100, 8, 128, "gru", backend="gpu").native


def test_calling_an_unavailable_kernel_raises_with_the_reason(monkeypatch):
    monkeypatch.setattr(native, "_load", lambda: "switched off (SEQJAX_NATIVE=0)")
    params, xs, h0 = _inputs(3, 4, 2, 5)
    xs_TB = jnp.swapaxes(xs, 0, 1)
    for call, target in ((lambda: native.gru_forward(*_weights(params), h0, xs_TB), native.TARGET_GRU),
                         (lambda: native.gru_backward(*_weights(params), h0, xs_TB, xs_TB, xs_TB, h0),
                          native.TARGET_GRU_BACKWARD),
                         (lambda: native.layer_closed_loop(native.GRU, _weights(params), (h0,), xs[:, 0],
                                                           params["w_h"][:, :2], params["b_x"][:2], 3),
                          native.TARGET_GRU_CLOSED_LOOP)):
        with pytest.raises(RuntimeError, match=f"{target} is unavailable: switched off"):
            call()
