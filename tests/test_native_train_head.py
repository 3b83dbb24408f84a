"""Training with a linear dense head inside the native kernels (`native.layer_train(..., head=)`,
`native.layer_backward_head`, `Plan.native_train_head`).

The forward kernel forms the head's outputs and keeps the layer's; the backward kernel takes the head outputs'
gradient, forms each step's `h` gradient `d_out_t w_d^T` in registers and adds `h_t^T d_out_t` into the head's
weight gradient. Compared with float64 NumPy backpropagation through the layer and the head, at sizes off the
kernels' tiles (batches not a multiple of 6 rows, hidden sizes off the 16-unit groups, head widths below, at and
past one 16-lane vector), both layouts, one thread and all, by units and by rows (batch 100), and through
`sj.scan` of `chain(cell, dense)` against the reference loop over `step`.
"""

import re

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

TRAIN_HEAD = Plan(native=True, native_head=True, native_train=True, native_train_head=True)
# (batch, time, features, hidden, head outputs)
SIZES = [(7, 9, 3, 5, 2), (13, 4, 2, 37, 17), (100, 5, 3, 21, 40), (20, 6, 17, 48, 16)]


def _inputs(cell, b, t, f, h, out, seed=0):
    """Params of `cell`, the head's `w_d [H, out]` and `b_d`, `xs [B, T, F]`, a non-zero carry, the gradients of
    the head's outputs `[B, T, out]` and of the final carry, float32."""
    rng = np.random.default_rng(seed + 200)
    params = {k: jnp.asarray(v) for k, v in ref.random_params(cell, seed, f, h).items()}
    draw = lambda *shape, s=1.0: jnp.asarray(rng.normal(0, s, shape), jnp.float32)  # noqa: E731
    carry = tuple(draw(b, h, s=0.5) for _ in range(2 if cell == "lstm" else 1))
    return (params, (draw(h, out, s=0.4), draw(out, s=0.4)), draw(b, t, f), carry, draw(b, t, out),
            tuple(draw(b, h) for _ in carry))


def _kernels(cell, params):
    if cell == "lstm":
        return native.LSTM, (params["w_x"], params["w_h"], params["b"], None)
    return native.GRU, (params["w_x"], params["w_h"], params["b_x"], params["b_h"])


def _close(got, want, atol=2e-5):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=atol * max(1.0, np.abs(want).max()), rtol=1e-4)


@pytest.mark.parametrize("cell, keep_gates", [("lstm", False), ("lstm", True), ("gru", False)],
                         ids=["lstm", "lstm kept gates", "gru"])
@pytest.mark.parametrize("b, t, f, h, out", SIZES)
@pytest.mark.parametrize("batch_major", [True, False])
@pytest.mark.parametrize("threads", [0, 1])
def test_training_kernels_with_the_head_match_float64_numpy(cell, keep_gates, b, t, f, h, out, batch_major,
                                                            threads):
    """The head's outputs, the kept layer outputs, the final carry, and every gradient (layer weights, head
    weights and bias, initial carry, inputs) against float64 NumPy."""
    params, head, xs, carry, d_out, d_carry = _inputs(cell, b, t, f, h, out)
    kernels, weights = _kernels(cell, params)

    @jax.jit
    def run(weights, head, carry, xs, d_out, d_carry):
        xs_TB = jnp.swapaxes(xs, 0, 1)
        new_carry, ys, kept = native.layer_train(kernels, weights, carry, xs_TB, batch_major=batch_major,
                                                 threads=threads, keep_gates=keep_gates, head=head)
        layout = (lambda a: a) if batch_major else (lambda a: jnp.swapaxes(a, 0, 1))
        grads = native.layer_backward_head(kernels, weights, carry, xs_TB, kept, layout(d_out), d_carry, head,
                                           batch_major=batch_major, threads=threads)
        return new_carry, layout(ys), layout(kept[0]), grads

    new_carry, ys, hs, (g, d_carry0, dxs, (dw_d, db_d)) = run(weights, head, carry, xs, d_out, d_carry)
    w_d, b_d = (np.asarray(a, np.float64) for a in head)
    d_out64 = np.asarray(d_out, np.float64)
    if cell == "lstm":
        hs_ref, h_ref, c_ref = ref.run_lstm(params, np.asarray(xs), *carry)
        final = (h_ref, c_ref)
        g_ref, *d_carry_ref, dxs_ref = ref.lstm_backward(params, np.asarray(xs), *carry, d_out64 @ w_d.T, *d_carry)
        names = ("w_x", "w_h", "b")
    else:
        hs_ref, h_ref = ref.run_gru(params, np.asarray(xs), carry[0])
        final = (h_ref,)
        g_ref, *d_carry_ref, dxs_ref = ref.gru_backward(params, np.asarray(xs), carry[0], d_out64 @ w_d.T,
                                                        d_carry[0])
        names = ("w_x", "w_h", "b_x", "b_h")
    _close(hs, hs_ref, atol=2e-6)
    _close(ys, hs_ref @ w_d + b_d, atol=4e-6)
    for got, want in zip(new_carry, final):
        _close(got, want, atol=4e-6)
    for got, name in zip(g, names):
        _close(got, g_ref[name])
    for got, want in zip(d_carry0, d_carry_ref):
        _close(got, want)
    _close(jnp.swapaxes(dxs, 0, 1), dxs_ref)
    _close(dw_d, np.einsum("bth,bto->ho", hs_ref, d_out64))
    _close(db_d, d_out64.sum((0, 1)))


def _chain_loss(model, params, xs, targets):
    return jnp.mean((sj.scan(model, params, model.initial_carry(xs.shape[0]), xs)[1] - targets) ** 2)


def _targets(text: str) -> set:
    """The custom-call targets a lowered program calls."""
    return set(re.findall(r"custom_call @(\w+)", text))


@pytest.mark.parametrize("make, kernels", [(sj.lstm, native.LSTM), (sj.gru, native.GRU)], ids=["lstm", "gru"])
@pytest.mark.parametrize("head", [lambda: sj.dense(5), lambda: sj.dense(20, use_bias=False)],
                         ids=["dense", "dense without bias"])
def test_gradient_of_a_chain_runs_the_head_inside_the_kernels(make, kernels, head, monkeypatch):
    """`jax.value_and_grad` of an MSE through `sj.scan` of `chain(cell, dense)` under `native_train_head` runs
    the head inside the training kernels (and no head-free backward kernel) with the reference loop's loss and
    gradients, the head's included."""
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: TRAIN_HEAD)
    model = sj.chain(make(37), head())
    params = model.init(jax.random.key(3), 4)
    rng = np.random.default_rng(5)
    width = params[1]["w"].shape[1]
    xs, targets = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((11, 8, 4), (11, 8, width)))
    value_and_grad = jax.jit(jax.value_and_grad(lambda p: _chain_loss(model, p, xs, targets)))
    assert _targets(value_and_grad.lower(params).as_text()) == {kernels.train_head, kernels.backward_head}
    reference = sj.chain(make(37)._replace(sequence=None), head())
    loss_ref, g_ref = jax.value_and_grad(lambda p: _chain_loss(reference, p, xs, targets))(params)
    loss, g = value_and_grad(params)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
    assert jax.tree.structure(g) == jax.tree.structure(g_ref)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("head", [lambda: sj.dense(3, activation="tanh"),
                                  lambda: sj.dense(3, matmul_dtype=jnp.bfloat16)],
                         ids=["activation", "bfloat16 matmuls"])
def test_heads_that_are_not_one_linear_dense_stay_outside(head, monkeypatch):
    """A dense with an activation or mixed precision is not an affine map the kernels run: the layer's own
    training kernels run, and the head's VJP outside feeds their backward pass."""
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: TRAIN_HEAD)
    model = sj.chain(sj.lstm(20), head())
    params = model.init(jax.random.key(1), 3)
    xs, targets = jnp.ones((7, 5, 3)), jnp.zeros((7, 5, 3))
    text = jax.jit(jax.grad(lambda p: _chain_loss(model, p, xs, targets))).lower(params).as_text()
    assert _targets(text) == {native.TARGET_TRAIN, native.TARGET_BACKWARD}


def test_stacked_layers_with_the_head_inside_the_top_kernels(monkeypatch):
    """`chain(lstm, gru, dense)`: the top layer trains with the head inside, its input gradient reaches the
    lower layer's backward kernel; the gradients equal the reference loops'."""
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: TRAIN_HEAD)
    parts = (sj.lstm(18), sj.gru(23), sj.dense(2))
    model = sj.chain(*parts)
    params = model.init(jax.random.key(4), 3)
    rng = np.random.default_rng(9)
    xs, targets = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((6, 10, 3), (6, 10, 2)))
    grad = jax.jit(jax.grad(lambda p: _chain_loss(model, p, xs, targets)))
    assert _targets(grad.lower(params).as_text()) == {native.TARGET_TRAIN, native.TARGET_BACKWARD,
                                                      native.TARGET_GRU_TRAIN_HEAD, native.TARGET_GRU_BACKWARD_HEAD}
    reference = sj.chain(*(part._replace(sequence=None) for part in parts))
    g_ref = jax.grad(lambda p: _chain_loss(reference, p, xs, targets))(params)
    for a, b in zip(jax.tree.leaves(grad(params)), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)


def test_plan_runs_the_head_inside_from_the_two_core_size():
    """Measured faster from medium up (LSTM and GRU), slower for the small GRU on one core."""
    choose = plan_module.native_choice
    for size in [(64, 100, 8, 128), (128, 200, 32, 256), (16, 2000, 8, 128), (1024, 50, 8, 128)]:
        assert choose(*size, "lstm")["native_train_head"] and choose(*size, "gru")["native_train_head"]
    assert not choose(32, 50, 2, 32, "lstm")["native_train_head"]
    assert not choose(32, 50, 2, 32, "gru")["native_train_head"]
    assert not choose(8, 10_000, 8, 256, "lstm")["native_train_head"]  # not on the kernels at all there
