"""`matmul_dtype=jnp.bfloat16` (mixed precision): every matmul's operands rounded to bfloat16, products
summed in float32, everything else float32.

The reference is the float64 NumPy loop of `reference.py` with its matmuls done the same way
(`reference.bfloat16_matmul`); the fast paths must give the reference loop's numbers under every plan.
Sizes all differ (B=3, T=7, F=4, H=5) so a wrong axis cannot pass.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference as ref
import seqjax as sj
import seqjax.fast._common as fast_common
from seqjax.fast import cudnn
from seqjax.fast.plan import Plan

B, T, F, H = 3, 7, 4, 5
BF16 = jnp.bfloat16
RUN = {"lstm": lambda p, xs, c, mm: ref.run_lstm(p, xs, c.h, c.c, mm=mm),
       "gru": lambda p, xs, c, mm: ref.run_gru(p, xs, c.h, mm=mm),
       "simple_rnn": lambda p, xs, c, mm: ref.run_simple_rnn(p, xs, c.h, mm=mm)}
CELLS = {"lstm": sj.lstm, "gru": sj.gru, "simple_rnn": sj.simple_rnn}
PLANS = [Plan(), Plan(chunk=3), Plan(chunk=3, recompute=True), Plan(chunk=1, recompute=True), Plan(hoist=True),
         Plan(fuse_xh=True, chunk=2), Plan(custom_vjp=False)]


def _problem(name, seed=0):
    params = {k: jnp.asarray(v) for k, v in ref.random_params(name, seed, F, H).items()}
    rng = np.random.default_rng(seed + 1)
    xs = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
    carry = jax.tree.map(lambda a: jnp.asarray(rng.normal(0, 0.5, a.shape), jnp.float32),
                         CELLS[name](H).initial_carry(B))
    return params, xs, carry


def _loss(cell, params, carry, xs):
    new_carry, ys = sj.scan(cell, params, carry, xs)
    w = jnp.sin(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
    return jnp.sum(w * ys) + sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(new_carry))


@pytest.mark.parametrize("name", list(CELLS))
def test_reference_step_rounds_each_matmuls_operands_to_bfloat16(name):
    params, xs, carry = _problem(name)
    cell = CELLS[name](H, matmul_dtype=BF16)
    new_carry, ys = sj.scan(cell._replace(sequence=None), params, carry, xs)
    assert ys.dtype == jnp.float32 and all(a.dtype == jnp.float32 for a in jax.tree.leaves(new_carry))
    want = RUN[name](ref.np64(params), np.float64(xs), carry, ref.bfloat16_matmul)
    np.testing.assert_allclose(ys, want[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new_carry[0], want[1], rtol=1e-4, atol=1e-5)
    # and it is not float32's answer: bfloat16 keeps ~3 significant digits
    full = RUN[name](ref.np64(params), np.float64(xs), carry, np.matmul)[0]
    assert 1e-4 < np.abs(np.asarray(ys) - full).max() < 0.1


@pytest.mark.parametrize("name, plan", [("lstm", p) for p in PLANS] + [(n, p) for n in ("gru", "simple_rnn")
                                                                      for p in PLANS[:4]])
def test_fast_paths_give_the_reference_loops_mixed_precision_numbers(name, plan, monkeypatch):
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: plan)
    params, xs, carry = _problem(name)
    cell = CELLS[name](H, matmul_dtype=BF16)
    slow = cell._replace(sequence=None)
    got, want = sj.scan(cell, params, carry, xs), sj.scan(slow, params, carry, xs)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    grads = jax.grad(_loss, argnums=(1, 2, 3))(cell, params, carry, xs)
    expected = jax.grad(_loss, argnums=(1, 2, 3))(slow, params, carry, xs)
    for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
        assert g.dtype == jnp.float32 and g.shape == e.shape
        # the two backward passes round the gradients' matmul operands at different points
        np.testing.assert_allclose(g, e, atol=2e-2 * float(np.abs(e).max()))
    # float32's gradients are further away than that tolerance allows for at least one leaf: the check bites
    full = jax.grad(_loss, argnums=(1, 2, 3))(CELLS[name](H)._replace(sequence=None), params, carry, xs)
    assert max(float(np.abs(g - f).max()) for g, f in zip(jax.tree.leaves(grads), jax.tree.leaves(full))) > 1e-4


def test_dense_rounds_its_matmul_and_a_mixed_chain_trains():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(B, F)), jnp.float32)
    layer = sj.dense(3, matmul_dtype="bfloat16")
    p = layer.init(jax.random.key(0), F)
    p["b"] = jnp.asarray(rng.normal(size=3), jnp.float32)
    _, y = layer.step(p, (), x)
    np.testing.assert_allclose(y, ref.bfloat16_matmul(x, p["w"]) + np.float64(p["b"]), rtol=1e-5, atol=1e-6)
    model = sj.chain(sj.lstm(H, matmul_dtype=BF16), layer)
    params = model.init(jax.random.key(1), F)
    xs = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
    grads = jax.grad(lambda p: jnp.mean(sj.scan(model, p, model.initial_carry(B), xs)[1] ** 2))(params)
    assert all(g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_matmul_dtype_errors_name_the_function_and_argument():
    with pytest.raises(TypeError, match=r"sj.lstm: matmul_dtype must be a floating dtype .* got int8"):
        sj.lstm(H, matmul_dtype=jnp.int8)
    with pytest.raises(TypeError, match=r"sj.gru: matmul_dtype must be a floating dtype .* got int32"):
        sj.gru(H, matmul_dtype="int32")
    with pytest.raises(TypeError, match=r"sj.dense: matmul_dtype must be a floating dtype .* got bool"):
        sj.dense(H, matmul_dtype=bool)
    with pytest.raises(ValueError, match=r"cudnn_lstm: cuDNN's LSTM runs float32 matmuls; this cell has "
                                         r"matmul_dtype=bfloat16"):
        cudnn.cudnn_lstm(sj.lstm(H, matmul_dtype=BF16))
