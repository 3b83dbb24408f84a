"""seqjax.flax: linen and NNX modules that run seqjax cells give exactly the functional API's numbers."""

from __future__ import annotations

import importlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import seqjax as sj
import seqjax.flax as sjf

B, T, F, H = 3, 5, 4, 6


# Cells with a normal recurrent initialiser: the default orthogonal one compiles a QR per shape on CPU,
# seconds per test, and these tests are about the modules' wiring, not initialisation.
FAST = {"recurrent_init": jax.nn.initializers.normal(0.5)}


def xs_BTF(seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(B, T, F)), jnp.float32)


def assert_trees_equal(a, b, atol=0.0):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


def test_import_flax_inside_seqjax_is_the_flax_library():
    """`seqjax/flax.py` and `seqjax/interop/flax.py` do not shadow Flax: imports are absolute."""
    import flax

    import seqjax.interop.flax as interop_flax

    assert "seqjax" not in flax.__file__ and "seqjax" not in nn.__file__
    assert sjf.nn is nn and sjf.nnx is nnx
    assert sys.modules["flax"] is flax and importlib.import_module("flax") is flax
    assert interop_flax.__name__ == "seqjax.interop.flax" and sjf.__name__ == "seqjax.flax"


def init_structure(cell, in_features=F):
    return jax.tree.structure(jax.eval_shape(lambda k: cell.init(k, in_features), jax.random.key(0)))


STACK = sj.chain(sj.bidirectional(sj.lstm(H - 1, **FAST), sj.gru(H - 2, **FAST)), sj.dense(2))
MASK = jnp.asarray(np.random.default_rng(2).random((B, T)) > 0.3)
RESET = jnp.zeros((B, T), bool).at[1, 2].set(True)


@pytest.mark.parametrize("cell,options", [
    (sj.lstm(H, **FAST), ({}, {"reverse": True})),
    (STACK, ({"mask": MASK, "reset": RESET},)),
])
def test_rnn_equals_scan(cell, options):
    module = sjf.RNN(cell)
    xs = xs_BTF()
    variables = module.init(jax.random.key(0), module.initial_carry(B), xs)
    params = variables["params"]["cell"]
    assert jax.tree.structure(params) == init_structure(cell)
    carry0 = jax.tree.map(lambda a: a + 0.5, cell.initial_carry(B))
    for kw in options:
        got = module.apply(variables, carry0, xs, **kw)
        want = sj.scan(cell, params, carry0, xs, **kw)
        assert_trees_equal(got, want)


def test_rnn_options_reach_scan():
    cell = sj.lstm(H, **FAST)
    xs = xs_BTF()
    mask = jnp.ones((B, T), bool).at[:, 2:].set(False)
    module = sjf.RNN(cell, masked_output="zero", unroll=2)
    variables = module.init(jax.random.key(0), cell.initial_carry(B), xs)
    _, ys = module.apply(variables, cell.initial_carry(B), xs, mask=mask)
    _, want = sj.scan(cell, variables["params"]["cell"], cell.initial_carry(B), xs, mask=mask,
                      masked_output="zero")
    assert_trees_equal(ys, want)
    assert float(jnp.abs(ys[:, 2:]).max()) == 0.0


def test_rnn_inside_a_linen_model_and_its_gradient():
    """A small Flax model (Dense encoder -> seqjax GRU -> Dense head) against the same maths by hand."""
    cell = sj.gru(H, **FAST)

    class Model(nn.Module):
        @nn.compact
        def __call__(self, carry, xs):
            x = nn.Dense(F + 1)(xs)
            carry, ys = sjf.RNN(cell, name="rnn")(carry, x)
            return carry, nn.Dense(2)(ys)

    xs = xs_BTF()
    model = Model()
    variables = model.init(jax.random.key(0), cell.initial_carry(B), xs)
    p = variables["params"]

    def by_hand(p, xs):
        x = xs @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
        carry, ys = sj.scan(cell, p["rnn"]["cell"], cell.initial_carry(B), x)
        return carry, ys @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]

    assert_trees_equal(model.apply(variables, cell.initial_carry(B), xs), by_hand(p, xs), atol=1e-6)
    loss = lambda out: jnp.mean(out[1] ** 2) + jnp.mean(out[0].h)  # noqa: E731
    g_model = jax.grad(lambda p: loss(model.apply({"params": p}, cell.initial_carry(B), xs)))(p)
    g_hand = jax.grad(lambda p: loss(by_hand(p, xs)))(p)
    assert_trees_equal(g_model, g_hand, atol=1e-6)
    assert float(jnp.abs(g_model["rnn"]["cell"]["w_h"]).max()) > 0


def test_rnn_dropout_uses_the_dropout_rng():
    cell = sj.lstm(H, dropout=0.5, recurrent_dropout=0.5, **FAST)
    module = sjf.RNN(cell)
    xs = xs_BTF()
    variables = module.init(jax.random.key(0), cell.initial_carry(B), xs)
    _, plain = module.apply(variables, cell.initial_carry(B), xs)
    _, want = sj.scan(cell, variables["params"]["cell"], cell.initial_carry(B), xs)
    assert_trees_equal(plain, want)  # deterministic=True (the default): no dropout
    run = lambda k: module.apply(variables, cell.initial_carry(B), xs, deterministic=False,  # noqa: E731
                                 rngs={"dropout": jax.random.key(k)})[1]
    a, b, c = run(1), run(1), run(2)
    assert_trees_equal(a, b)
    assert float(jnp.abs(a - plain).max()) > 1e-3 and float(jnp.abs(a - c).max()) > 1e-3
    with pytest.raises(Exception, match="dropout"):
        module.apply(variables, cell.initial_carry(B), xs, deterministic=False)


def test_rnn_with_token_ids():
    cell = sj.chain(sj.embed(10, F), sj.gru(H, **FAST), sj.dense(10))
    module = sjf.RNN(cell)
    ids = jnp.asarray(np.random.default_rng(3).integers(0, 10, (B, T)))
    variables = module.init(jax.random.key(0), module.initial_carry(B), ids)
    assert_trees_equal(module.apply(variables, cell.initial_carry(B), ids),
                       sj.scan(cell, variables["params"]["cell"], cell.initial_carry(B), ids))


def test_step_cell_in_flax_rnn():
    cell = sj.chain(sj.lstm(H, **FAST), sj.dense(3))
    rnn = nn.RNN(sjf.StepCell(cell), return_carry=True)
    xs = xs_BTF()
    variables = rnn.init(jax.random.key(0), xs)
    params = variables["params"]["cell"]["cell"]
    got = rnn.apply(variables, xs)
    assert_trees_equal(got, sj.scan(cell, params, cell.initial_carry(B), xs), atol=1e-6)
    seq_lengths = jnp.array([5, 3, 1])
    _, ys = rnn.apply(variables, xs, seq_lengths=seq_lengths)
    _, want = sj.scan(cell, params, cell.initial_carry(B), xs, mask=jnp.arange(T)[None] < seq_lengths[:, None])
    np.testing.assert_allclose(ys[1, :3], want[1, :3], atol=1e-6)


def test_nnx_rnn_equals_scan_and_trains():
    cell = sj.chain(sj.lstm(H, **FAST), sj.dense(2))
    model = sjf.NNXRNN(cell, F, rngs=nnx.Rngs(0))
    xs = xs_BTF()
    params = model.cell_params()
    assert jax.tree.structure(params) == init_structure(cell)
    assert_trees_equal(model(model.initial_carry(B), xs), sj.scan(cell, params, cell.initial_carry(B), xs))
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n_params == sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))

    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    target = jnp.ones((B, T, 2))

    @nnx.jit
    def train_step(model, optimizer):
        def loss_fn(model):
            return jnp.mean((model(model.initial_carry(B), xs)[1] - target) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(train_step(model, optimizer)) for _ in range(5)]
    assert losses[-1] < losses[0]
    _, ys = model(model.initial_carry(B), xs)
    assert_trees_equal(ys, sj.scan(cell, model.cell_params(), cell.initial_carry(B), xs)[1])


def test_bad_cell_is_a_clear_error():
    with pytest.raises(TypeError, match=r"seqjax.flax.RNN: cell must be a seqjax Cell"):
        sjf.RNN("lstm").init(jax.random.key(0), (), xs_BTF())
    with pytest.raises(TypeError, match=r"seqjax.flax.NNXRNN: cell must be a seqjax Cell"):
        sjf.NNXRNN(nn.LSTMCell(H), F, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"seqjax.flax.RNN: xs must be \[batch, time, features\]"):
        sjf.RNN(sj.lstm(H)).init(jax.random.key(0), sj.lstm(H).initial_carry(B), jnp.ones((F,)))
