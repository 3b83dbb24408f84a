"""The native CPU kernel (`seqjax.fast.native`): numbers, dispatch, gradients and the build's failure modes.

The kernel is compared with the float64 NumPy LSTM of `reference.py` and with the reference loop over
`step`, at sizes that exercise its edges: batches that are not a multiple of its 6-row tiles, hidden sizes
that are not a multiple of its 16-unit groups (and smaller than one), one step, one input feature.
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

NATIVE = Plan(native=True, native_head=True)


def _inputs(b, t, f, h, seed=0):
    rng = np.random.default_rng(seed + 100)  # not the params' stream
    params = {k: jnp.asarray(v) for k, v in ref.random_params("lstm", seed, f, h).items()}
    xs = jnp.asarray(rng.normal(size=(b, t, f)), jnp.float32)
    h0, c0 = (jnp.asarray(rng.normal(0, 0.5, (b, h)), jnp.float32) for _ in range(2))
    return params, xs, h0, c0


def _carry(cell, h0, c0):
    return cell.initial_carry(h0.shape[0])._replace(h=h0, c=c0)


def _reference_loss(cell, params, carry, xs):
    new_carry, ys = sj.scan(cell, params, carry, xs)
    w = jnp.sin(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
    return jnp.sum(w * ys) + jnp.sum(jnp.cos(new_carry.h)) + jnp.sum(jnp.sin(new_carry.c))


def test_the_kernel_builds_here():
    assert native.available(), native.unavailable_reason()
    assert native.unavailable_reason() is None


@pytest.mark.parametrize("b, t, f, h", [(7, 9, 3, 5), (13, 4, 2, 37), (6, 1, 4, 32), (2, 11, 5, 16), (20, 6, 3, 48)])
@pytest.mark.parametrize("batch_major", [True, False])
@pytest.mark.parametrize("threads", [0, 1])
def test_kernel_matches_float64_numpy(b, t, f, h, batch_major, threads):
    params, xs, h0, c0 = _inputs(b, t, f, h)
    run = jax.jit(lambda p, h0, c0, xs: native.lstm_forward(p["w_x"], p["w_h"], p["b"], h0, c0,
                                                                 jnp.swapaxes(xs, 0, 1), batch_major=batch_major,
                                                                 threads=threads))
    (h_k, c_k), ys = run(params, h0, c0, xs)
    ys_ref, h_ref, c_ref = ref.run_lstm(params, np.asarray(xs), h0, c0)
    assert ys.shape == ((b, t, h) if batch_major else (t, b, h))
    np.testing.assert_allclose(ys if batch_major else np.swapaxes(ys, 0, 1), ys_ref, atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(h_k, h_ref, atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(c_k, c_ref, atol=4e-6, rtol=1e-5)


def test_one_thread_and_all_give_the_same_bits():
    params, xs, h0, c0 = _inputs(9, 8, 3, 40)  # three groups: split unevenly over two threads
    outs = [jax.jit(lambda *a, n=n: native.lstm_forward(*a, threads=n))(params["w_x"], params["w_h"], params["b"],
                                                                       h0, c0, jnp.swapaxes(xs, 0, 1))
            for n in (0, 1)]
    for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1])):
        np.testing.assert_array_equal(a, b)


def test_scan_evaluates_with_the_kernel_and_differentiates_with_the_engine(monkeypatch):
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: NATIVE)
    cell = sj.lstm(21)
    params, xs, h0, c0 = _inputs(5, 8, 3, 21)
    carry = _carry(cell, h0, c0)
    evaluate = jax.jit(lambda p, c, x: sj.scan(cell, p, c, x))
    assert native.TARGET in evaluate.lower(params, carry, xs).as_text()
    grad = jax.jit(jax.grad(lambda p, c, x: _reference_loss(cell, p, c, x), argnums=(0, 1, 2)))
    assert native.TARGET not in grad.lower(params, carry, xs).as_text()

    new_carry, ys = evaluate(params, carry, xs)
    ys_ref, h_ref, c_ref = ref.run_lstm(params, np.asarray(xs), h0, c0)
    assert type(new_carry) is type(carry)
    np.testing.assert_allclose(ys, ys_ref, atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(new_carry.c, c_ref, atol=4e-6, rtol=1e-5)
    reference = cell._replace(sequence=None)
    g = grad(params, carry, xs)
    g_ref = jax.grad(lambda p, c, x: _reference_loss(reference, p, c, x), argnums=(0, 1, 2))(params, carry, xs)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)


def test_a_sequence_in_chunks_with_the_carry_passed_on_equals_the_whole(monkeypatch):
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: NATIVE)
    cell = sj.lstm(19)
    params, xs, h0, c0 = _inputs(7, 12, 2, 19)
    run = jax.jit(lambda p, c, x: sj.scan(cell, p, c, x))
    whole_carry, whole = run(params, _carry(cell, h0, c0), xs)
    carry, parts = _carry(cell, h0, c0), []
    for lo, hi in ((0, 5), (5, 6), (6, 12)):
        carry, ys = run(params, carry, xs[:, lo:hi])
        parts.append(ys)
    np.testing.assert_allclose(jnp.concatenate(parts, axis=1), whole, atol=1e-6)
    np.testing.assert_allclose(carry.c, whole_carry.c, atol=1e-6)


def test_chain_with_a_head_and_one_input_feature(monkeypatch):
    """`chain(lstm, dense)` on the kernel (the head over its outputs), one input feature (the engine's empty
    second feature reaches the kernel): the float64 reference of the layer and the dense."""
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: NATIVE)
    model = sj.chain(sj.lstm(18), sj.dense(1))
    params = model.init(jax.random.key(3), 1)
    xs = jnp.asarray(np.random.default_rng(4).normal(size=(4, 10, 1)), jnp.float32)
    run = jax.jit(lambda p, x: sj.scan(model, p, model.initial_carry(4), x)[1])
    assert native.TARGET in run.lower(params, xs).as_text()
    layer, head = params
    hs, _, _ = ref.run_lstm(layer, np.asarray(xs))
    np.testing.assert_allclose(run(params, xs), hs @ np.asarray(head["w"], np.float64) + np.asarray(head["b"]),
                               atol=3e-6, rtol=1e-5)


def test_vmap_of_scan_on_the_kernel(monkeypatch):
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: NATIVE)
    cell = sj.lstm(17)
    params, _, _, _ = _inputs(1, 1, 3, 17)
    xs = jnp.asarray(np.random.default_rng(5).normal(size=(3, 4, 6, 3)), jnp.float32)  # 3 groups of batch 4
    run = jax.jit(jax.vmap(lambda x: sj.scan(cell, params, cell.initial_carry(4), x)[1]))
    for k in range(3):
        np.testing.assert_allclose(run(xs)[k], ref.run_lstm(params, np.asarray(xs[k]))[0], atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("what", ["float64", "bfloat16 matmuls", "kernel unavailable"])
def test_what_the_kernel_does_not_run(what, monkeypatch):
    """float64, mixed precision and a machine without the kernel run the engine's loop, same numbers."""
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: NATIVE)
    dtype = jnp.float64 if what == "float64" else jnp.float32
    cell = sj.lstm(6, matmul_dtype=jnp.bfloat16) if what == "bfloat16 matmuls" else sj.lstm(6, dtype=dtype)
    if what == "kernel unavailable":
        monkeypatch.setattr(native, "available", lambda: False)
    params, xs, h0, c0 = _inputs(3, 5, 2, 6)
    with jax.enable_x64(what == "float64"):
        params, xs = jax.tree.map(lambda a: a.astype(dtype), (params, xs))
        carry = jax.tree.map(lambda a: a.astype(dtype), _carry(cell, h0, c0))
        run = jax.jit(lambda p, c, x: sj.scan(cell, p, c, x)[1])
        assert native.TARGET not in run.lower(params, carry, xs).as_text()
        ys = run(params, carry, xs)
    assert ys.dtype == dtype
    tol = 5e-2 if what == "bfloat16 matmuls" else 2e-6
    np.testing.assert_allclose(ys, ref.run_lstm(params, np.asarray(xs, np.float64), h0, c0)[0], atol=tol)


def test_plan_chooses_the_kernel_where_it_was_measured_faster():
    choose = lambda b, t, f, h, cell="lstm": plan_module.plan_for(b, t, f, h, cell, backend="cpu", huge=False)  # noqa
    for b, t, f, h in [(32, 50, 2, 32), (64, 100, 8, 128), (128, 200, 32, 256), (16, 2000, 8, 128),
                       (1024, 100, 8, 128)]:
        assert choose(b, t, f, h).native
        assert not choose(b, t, f, h, "gru").native  # no GRU kernel
    assert not choose(5, 7, 3, 20).native  # per-call overhead above the work
    assert choose(64, 100, 8, 128).native_head and choose(16, 2000, 8, 128).native_head
    assert not choose(128, 200, 32, 256).native_head and not choose(1024, 100, 8, 128).native_head
    assert not plan_module.plan_for(64, 100, 8, 128, "lstm", backend="gpu").native


@pytest.fixture
def fresh_load(monkeypatch, tmp_path):
    """`native._load` rerun under the test's environment (a cache folder of its own), then reset."""
    monkeypatch.setenv("SEQJAX_CACHE_DIR", str(tmp_path))
    native._load.cache_clear()
    yield
    native._load.cache_clear()


@pytest.mark.usefixtures("fresh_load")
@pytest.mark.parametrize("env, reason", [({"SEQJAX_NATIVE": "0"}, "switched off"),
                                         ({"CXX": "/nonexistent/c++"}, "/nonexistent/c++"),
                                         ({"CXX": "false"}, "failed")])
def test_an_unbuildable_kernel_says_why(env, reason, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert not native.available()
    assert reason in native.unavailable_reason()
