"""The native CPU kernels (`seqjax.fast.native`): numbers, dispatch, gradients and the build's failure modes.

The kernels are compared with the float64 NumPy LSTM of `reference.py` (forward, and backpropagation
through time) and with the reference loop over `step`, at sizes that exercise their edges: batches that
are not a multiple of the 6-row tiles, hidden sizes that are not a multiple of the 16-unit groups (and
smaller than one), input features past one 16-lane vector, one step, one input feature.
"""

import functools

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
NATIVE_TRAIN = Plan(native=True, native_head=True, native_train=True)


def _inputs(b, t, f, h, seed=0):
    rng = np.random.default_rng(seed + 100)  # not the params' stream
    params = {k: jnp.asarray(v) for k, v in ref.random_params("lstm", seed, f, h).items()}
    xs = jnp.asarray(rng.normal(size=(b, t, f)), jnp.float32)
    h0, c0 = (jnp.asarray(rng.normal(0, 0.5, (b, h)), jnp.float32) for _ in range(2))
    return params, xs, h0, c0


def _carry(cell, h0, c0):
    return cell.initial_carry(h0.shape[0])._replace(h=h0, c=c0)


def _reference_loss(cell, params, carry, xs):
    return _reference_loss_of(*sj.scan(cell, params, carry, xs)[::-1])


def _reference_loss_of(ys, new_carry):
    """A loss that weighs every output and the final carry differently (so no gradient is symmetric)."""
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


@pytest.mark.parametrize("threads", [0, 1])
def test_a_nan_input_matches_float64_numpy(threads):
    # A NaN stays in its row from its step on, as in NumPy (and XLA's step): the tanh's clamps keep a NaN
    # lane (minps / maxps return their second operand where a lane is unordered) instead of replacing it.
    params, xs, h0, c0 = _inputs(9, 7, 3, 21)
    xs = xs.at[4, 3, 1].set(jnp.nan)
    (h_k, c_k), ys = jax.jit(lambda p, h0, c0, xs: native.lstm_forward(
        p["w_x"], p["w_h"], p["b"], h0, c0, jnp.swapaxes(xs, 0, 1), batch_major=True, threads=threads))(
        params, h0, c0, xs)
    ys_ref, h_ref, c_ref = ref.run_lstm(params, np.asarray(xs), h0, c0)
    assert np.isnan(ys_ref[4, 3:]).all() and not np.isnan(np.delete(ys_ref, 4, axis=0)).any()
    for got, want in ((ys, ys_ref), (h_k, h_ref), (c_k, c_ref)):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, atol=4e-6, rtol=1e-5)  # equal_nan: the NaNs where NumPy's are


@pytest.mark.parametrize("f, h", [(3, 37), (17, 16), (2, 5)])
def test_unpack_inverts_pack(f, h):
    """`unpack` (the backward kernel's weight gradient back to `w_x, w_h, b`) is `pack`'s inverse; the packed
    columns past `H` are zero."""
    params = ref.random_params("lstm", 2, f, h)
    w, bias = native.pack(params["w_x"], params["w_h"], params["b"])
    assert w.shape == (-(-h // 16), f + h, 64) and bias.shape == (w.shape[0] * 64,)
    assert int(jnp.count_nonzero(w)) == (f + h) * 4 * h and int(jnp.count_nonzero(bias)) == 4 * h
    for got, want in zip(native.unpack(w, bias, f), (params["w_x"], params["w_h"], params["b"])):
        np.testing.assert_array_equal(got, want)


def test_one_thread_and_all_give_the_same_bits():
    params, xs, h0, c0 = _inputs(9, 8, 3, 40)  # three groups: split unevenly over two threads
    outs = [jax.jit(lambda *a, n=n: native.lstm_forward(*a, threads=n))(params["w_x"], params["w_h"], params["b"],
                                                                       h0, c0, jnp.swapaxes(xs, 0, 1))
            for n in (0, 1)]
    for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1])):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("b, t, f, h", [(7, 9, 3, 5), (13, 4, 2, 37), (6, 1, 17, 32), (20, 6, 3, 48)])
@pytest.mark.parametrize("batch_major", [True, False])
@pytest.mark.parametrize("threads", [0, 1])
@pytest.mark.parametrize("keep_gates", [False, True], ids=["recomputed", "kept gates"])
def test_backward_kernel_matches_float64_numpy(b, t, f, h, batch_major, threads, keep_gates):
    """`lstm_forward_train` then `lstm_backward` against backpropagation through time in float64 NumPy: the
    weight, bias, initial-carry and input gradients, from output and final-carry gradients."""
    params, xs, h0, c0 = _inputs(b, t, f, h)
    rng = np.random.default_rng(7)
    dys = jnp.asarray(rng.normal(size=(b, t, h)), jnp.float32)
    dh, dc = (jnp.asarray(rng.normal(size=(b, h)), jnp.float32) for _ in range(2))

    @jax.jit
    def run(p, h0, c0, xs, dys, dh, dc):
        xs_TB = jnp.swapaxes(xs, 0, 1)
        args = (p["w_x"], p["w_h"], p["b"], h0, c0, xs_TB)
        (h_k, c_k), ys, kept = native.lstm_forward_train(*args, batch_major=batch_major, threads=threads,
                                                         keep_gates=keep_gates)
        assert kept[2].size == (ys.size // h * 64 * -(-h // 16) if keep_gates else 0)
        d = dys if batch_major else jnp.swapaxes(dys, 0, 1)
        grads, d_carry, dxs = native.lstm_backward(*args, kept, d, dh, dc, batch_major=batch_major,
                                                   threads=threads)
        return (h_k, c_k), ys, grads, d_carry, jnp.swapaxes(dxs, 0, 1)

    (h_k, c_k), ys, (dw_x, dw_h, db), (dh0, dc0), dxs = run(params, h0, c0, xs, dys, dh, dc)
    ys_ref, h_ref, c_ref = ref.run_lstm(params, np.asarray(xs), h0, c0)
    np.testing.assert_allclose(ys if batch_major else np.swapaxes(ys, 0, 1), ys_ref, atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(c_k, c_ref, atol=4e-6, rtol=1e-5)
    g, dh0_ref, dc0_ref, dxs_ref = ref.lstm_backward(params, np.asarray(xs), h0, c0, dys, dh, dc)
    for got, want in ((dw_x, g["w_x"]), (dw_h, g["w_h"]), (db, g["b"]), (dh0, dh0_ref), (dc0, dc0_ref),
                      (dxs, dxs_ref)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=2e-5 * max(1.0, np.abs(want).max()), rtol=1e-4)


def test_the_backward_kernel_reads_the_kept_gates():
    """With kept gates the backward pass reads them instead of recomputing: gates that are not the forward
    pass's change the gradients; the forward pass's give those of the recomputation to float32 rounding."""
    params, xs, h0, c0 = _inputs(8, 5, 3, 20)
    args = (params["w_x"], params["w_h"], params["b"], h0, c0, jnp.swapaxes(xs, 0, 1))
    dys = jnp.asarray(np.random.default_rng(4).normal(size=(8, 5, 20)), jnp.float32)

    @functools.partial(jax.jit, static_argnums=0)
    def run(keep_gates, scale):
        _, ys, (ys, cs, gates) = native.lstm_forward_train(*args, keep_gates=keep_gates)
        return native.lstm_backward(*args, (ys, cs, gates * scale), dys, h0, c0)

    kept, recomputed, wrong = run(True, 1.0), run(False, 1.0), run(True, 0.5)
    for a, b, c in zip(*(jax.tree.leaves(x) for x in (kept, recomputed, wrong))):
        np.testing.assert_allclose(a, b, atol=1e-5 * max(1.0, np.abs(b).max()), rtol=1e-5)
        assert np.abs(np.asarray(c) - np.asarray(b)).max() > 1e-2 * max(1.0, np.abs(b).max())


def test_backward_on_one_thread_and_all_gives_the_same_bits():
    params, xs, h0, c0 = _inputs(9, 8, 3, 40)  # three groups: split unevenly over two threads
    args = (params["w_x"], params["w_h"], params["b"], h0, c0, jnp.swapaxes(xs, 0, 1))
    dys = jnp.asarray(np.random.default_rng(8).normal(size=(9, 8, 40)), jnp.float32)

    def run(n):
        _, ys, kept = native.lstm_forward_train(*args, threads=n)
        return native.lstm_backward(*args, kept, dys, h0, c0, threads=n)

    for a, b in zip(jax.tree.leaves(jax.jit(lambda: run(0))()), jax.tree.leaves(jax.jit(lambda: run(1))())):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("plan", [NATIVE_TRAIN, Plan(native_train=True), NATIVE_TRAIN._replace(native_keep_gates=True)],
                         ids=["evaluated too", "gradient only", "gates kept"])
def test_gradients_run_the_training_kernels(plan, monkeypatch):
    """With `native_train`, `jax.grad` through `sj.scan` runs the forward-train and backward kernels (and
    evaluation the kernel or the engine as `native` says), with the reference loop's gradients."""
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: plan)
    cell = sj.lstm(21)
    params, xs, h0, c0 = _inputs(5, 8, 3, 21)
    carry = _carry(cell, h0, c0)
    evaluate = jax.jit(lambda p, c, x: sj.scan(cell, p, c, x))
    assert (native.TARGET in evaluate.lower(params, carry, xs).as_text()) == plan.native
    grad = jax.jit(jax.grad(lambda p, c, x: _reference_loss(cell, p, c, x), argnums=(0, 1, 2)))
    text = grad.lower(params, carry, xs).as_text()
    assert native.TARGET_TRAIN in text and native.TARGET_BACKWARD in text
    assert ("keep_gates = true" in text) == plan.native_keep_gates
    np.testing.assert_allclose(evaluate(params, carry, xs)[1], ref.run_lstm(params, np.asarray(xs), h0, c0)[0],
                               atol=2e-6, rtol=1e-5)
    reference = cell._replace(sequence=None)
    g_ref = jax.grad(lambda p, c, x: _reference_loss(reference, p, c, x), argnums=(0, 1, 2))(params, carry, xs)
    for a, b in zip(jax.tree.leaves(grad(params, carry, xs)), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)


def test_train_step_of_a_chain_on_the_training_kernels(monkeypatch):
    """`chain(lstm, dense)`'s MSE gradient (the head's VJP feeds the layer's backward kernel, outputs kept
    `[T, B, H]`) and a stacked `chain(lstm, lstm, dense)` (the upper layer's input gradient reaches the lower
    layer) equal the reference loops'."""
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: NATIVE_TRAIN)
    rng = np.random.default_rng(9)
    xs = jnp.asarray(rng.normal(size=(6, 11, 3)), jnp.float32)
    targets = jnp.asarray(rng.normal(size=(6, 11, 2)), jnp.float32)
    for parts in ((sj.lstm(18), sj.dense(2)), (sj.lstm(18), sj.lstm(23), sj.dense(2))):
        model = sj.chain(*parts)
        params = model.init(jax.random.key(4), 3)

        def loss(p, m):
            return jnp.mean((sj.scan(m, p, m.initial_carry(6), xs)[1] - targets) ** 2)

        grad = jax.jit(jax.grad(lambda p: loss(p, model)))
        text = grad.lower(params).as_text()
        assert text.count(native.TARGET_BACKWARD) == len(parts) - 1
        reference = sj.chain(*(part._replace(sequence=None) for part in parts))
        g_ref = jax.grad(lambda p: loss(p, reference))(params)
        for a, b in zip(jax.tree.leaves(grad(params)), jax.tree.leaves(g_ref)):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)


def test_gradient_of_a_sequence_in_chunks_equals_the_whole(monkeypatch):
    """Two calls with the carry passed on, differentiated through the training kernels: the gradients of
    the whole sequence's (the carry's gradient crosses from the second call's backward to the first's)."""
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: NATIVE_TRAIN)
    cell = sj.lstm(19)
    params, xs, h0, c0 = _inputs(7, 12, 2, 19)

    def loss(p, x, split):
        carry, parts = _carry(cell, h0, c0), []
        for lo, hi in ((0, split), (split, 12)) if split else ((0, 12),):
            carry, ys = sj.scan(cell, p, carry, x[:, lo:hi])
            parts.append(ys)
        return _reference_loss_of(jnp.concatenate(parts, axis=1), carry)

    whole = jax.jit(jax.grad(lambda p, x: loss(p, x, 0), argnums=(0, 1)))(params, xs)
    chunked = jax.jit(jax.grad(lambda p, x: loss(p, x, 5), argnums=(0, 1)))(params, xs)
    for a, b in zip(jax.tree.leaves(chunked), jax.tree.leaves(whole)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_gradient_under_remat_on_the_training_kernels(monkeypatch):
    """`sj.scan(..., remat=K)` (checkpointed chunks; each chunk's kernels run again in the backward pass):
    the gradients of the plain call."""
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: NATIVE_TRAIN)
    cell = sj.lstm(19)
    params, xs, h0, c0 = _inputs(7, 12, 2, 19)

    def loss(p, x, remat):
        return _reference_loss_of(*sj.scan(cell, p, _carry(cell, h0, c0), x, remat=remat)[::-1])

    grad = jax.jit(jax.grad(lambda p, x: loss(p, x, 5), argnums=(0, 1)))
    assert native.TARGET_BACKWARD in grad.lower(params, xs).as_text()
    plain = jax.jit(jax.grad(lambda p, x: loss(p, x, None), argnums=(0, 1)))(params, xs)
    for a, b in zip(jax.tree.leaves(grad(params, xs)), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_vmap_of_a_gradient_on_the_training_kernels(monkeypatch):
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: NATIVE_TRAIN)
    cell = sj.lstm(17)
    params, _, _, _ = _inputs(1, 1, 3, 17)
    xs = jnp.asarray(np.random.default_rng(5).normal(size=(3, 4, 6, 3)), jnp.float32)  # 3 groups of batch 4

    def loss(p, x, c):
        return jnp.sum(jnp.sin(sj.scan(c, p, c.initial_carry(4), x)[1]))

    grads = jax.jit(jax.vmap(jax.grad(lambda p, x: loss(p, x, cell)), in_axes=(None, 0)))(params, xs)
    reference = cell._replace(sequence=None)
    for k in range(3):
        g_ref = jax.grad(lambda p: loss(p, xs[k], reference))(params)
        for name in params:
            np.testing.assert_allclose(grads[name][k], g_ref[name], atol=1e-5, rtol=1e-4)


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


def _calls(text: str, target: str) -> bool:
    """Whether lowered StableHLO `text` calls the custom call `target` (not one whose name it begins)."""
    return f"@{target}(" in text


@pytest.mark.parametrize("b, t, f, h, out", [(7, 9, 3, 5, 1), (13, 4, 2, 37, 17), (6, 1, 4, 32, 70),
                                             (20, 6, 3, 48, 16)])
@pytest.mark.parametrize("batch_major", [True, False])
@pytest.mark.parametrize("threads", [0, 1])
def test_kernel_with_the_head_inside_matches_float64_numpy(b, t, f, h, out, batch_major, threads):
    """`lstm_forward_head`: the layer's float64 reference followed by the affine head, only its outputs
    written (head widths of one feature, past one 16-lane vector and past one tile of four vectors)."""
    params, xs, h0, c0 = _inputs(b, t, f, h)
    rng = np.random.default_rng(7)
    w_d, b_d = (jnp.asarray(rng.normal(0, 0.5, s), jnp.float32) for s in ((h, out), (out,)))
    run = jax.jit(lambda p, h0, c0, xs, w_d, b_d: native.lstm_forward_head(
        p["w_x"], p["w_h"], p["b"], h0, c0, jnp.swapaxes(xs, 0, 1), w_d, b_d, batch_major=batch_major,
        threads=threads))
    (h_k, c_k), ys = run(params, h0, c0, xs, w_d, b_d)
    hs, h_ref, c_ref = ref.run_lstm(params, np.asarray(xs), h0, c0)
    assert ys.shape == ((b, t, out) if batch_major else (t, b, out))
    want = hs @ np.asarray(w_d, np.float64) + np.asarray(b_d, np.float64)
    np.testing.assert_allclose(ys if batch_major else np.swapaxes(ys, 0, 1), want, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(h_k, h_ref, atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(c_k, c_ref, atol=4e-6, rtol=1e-5)


@pytest.mark.parametrize("plan", [NATIVE, Plan(native=True)])
def test_chain_with_a_head_and_one_input_feature(plan, monkeypatch):
    """`chain(lstm, dense)` evaluated runs the dense inside the kernel (whether or not the plan would write
    the layer's outputs for a head), one input feature (the engine's empty second feature reaches the
    kernel): the float64 reference of the layer and the dense."""
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: plan)
    model = sj.chain(sj.lstm(18), sj.dense(1))
    params = model.init(jax.random.key(3), 1)
    xs = jnp.asarray(np.random.default_rng(4).normal(size=(4, 10, 1)), jnp.float32)
    run = jax.jit(lambda p, x: sj.scan(model, p, model.initial_carry(4), x)[1])
    assert _calls(run.lower(params, xs).as_text(), native.TARGET_HEAD)
    layer, head = params
    hs, _, _ = ref.run_lstm(layer, np.asarray(xs))
    np.testing.assert_allclose(run(params, xs), hs @ np.asarray(head["w"], np.float64) + np.asarray(head["b"]),
                               atol=3e-6, rtol=1e-5)


@pytest.mark.parametrize("dense", ["activation", "no bias"])
def test_heads_the_kernel_does_not_run_inside(dense, monkeypatch):
    """A dense with an activation runs after the layer's kernel (which writes the layer's outputs); one without
    a bias runs inside it. Both give the reference loop's numbers."""
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: NATIVE)
    head = sj.dense(3, activation="tanh") if dense == "activation" else sj.dense(3, use_bias=False)
    model = sj.chain(sj.lstm(21), head)
    params = model.init(jax.random.key(5), 4)
    xs = jnp.asarray(np.random.default_rng(6).normal(size=(5, 7, 4)), jnp.float32)
    run = lambda m: jax.jit(lambda p, x: sj.scan(m, p, m.initial_carry(5), x)[1])  # noqa: E731
    text = run(model).lower(params, xs).as_text()
    assert _calls(text, native.TARGET_HEAD) == (dense == "no bias")
    assert _calls(text, native.TARGET) == (dense == "activation")
    slow = sj.chain(sj.lstm(21)._replace(sequence=None), head)
    np.testing.assert_allclose(run(model)(params, xs), run(slow)(params, xs), atol=2e-6, rtol=1e-5)


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
        assert choose(b, t, f, h).native and choose(b, t, f, h, "gru").native
        assert not choose(b, t, f, h, "simple_rnn").native  # no kernel
    assert not choose(5, 7, 3, 20).native  # per-call overhead above the work
    # one core for small steps (threads in lockstep lose most where another process holds the second core)
    assert choose(32, 50, 2, 32).native_threads == 1 and choose(64, 100, 8, 128).native_threads == 0
    # evaluation: all cores where the call's multiply-adds pay for waking the second one (by steps, not a step's)
    assert [choose(32, t, 2, 32).native_eval_threads for t in (50, 100, 2000)] == [1, 0, 0]
    assert [choose(32, t, 2, 32).native_threads for t in (50, 100, 2000)] == [1, 1, 1]  # training: one core
    assert choose(64, 100, 8, 128).native_eval_threads == 0 and choose(64, 2, 8, 128).native_eval_threads == 0
    assert choose(64, 100, 8, 128).native_head and choose(16, 2000, 8, 128).native_head
    assert not choose(128, 200, 32, 256).native_head and not choose(1024, 100, 8, 128).native_head
    assert all(choose(*size).native_train for size in [(32, 50, 2, 32), (64, 100, 8, 128), (128, 200, 32, 256),
                                                       (16, 2000, 8, 128), (1024, 50, 8, 128)])
    assert not choose(8, 10_000, 8, 256).native_train  # past the memory it may keep: the engine's chunked plans
    assert not plan_module.plan_for(64, 100, 8, 128, "lstm", backend="gpu").native


@pytest.mark.parametrize("thp", [True, False])
def test_plan_keeps_the_lstm_gates_where_the_kernels_get_huge_pages(thp, monkeypatch):
    monkeypatch.setattr(plan_module, "kernel_huge_pages", lambda: thp)
    choose = lambda b, t, f, h, cell="lstm": plan_module.native_choice(b, t, f, h, cell)  # noqa: E731
    for size in [(32, 50, 2, 32), (64, 100, 8, 128), (128, 200, 32, 256), (16, 2000, 8, 128), (1024, 50, 8, 128)]:
        assert choose(*size)["native_train"] and choose(*size)["native_keep_gates"] == thp
        assert not choose(*size, "gru")["native_keep_gates"]  # its backward pass needs only the outputs
    assert not any(choose(8, 10_000, 8, 256)[k] for k in ("native_train", "native_keep_gates"))


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


@pytest.mark.usefixtures("fresh_load")
def test_calling_an_unavailable_kernel_raises_with_the_reason(monkeypatch):
    monkeypatch.setenv("SEQJAX_NATIVE", "0")
    params, xs, h0, c0 = _inputs(3, 4, 2, 5)
    args = (params["w_x"], params["w_h"], params["b"], h0, c0, jnp.swapaxes(xs, 0, 1))
    for call, target in ((lambda: native.lstm_forward(*args), native.TARGET),
                         (lambda: native.lstm_forward_train(*args), native.TARGET_TRAIN),
                         (lambda: native.lstm_backward(*args, (xs, xs, xs), xs, h0, c0), native.TARGET_BACKWARD)):
        with pytest.raises(RuntimeError, match=f"{target} is unavailable: switched off"):
            call()
