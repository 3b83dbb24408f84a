"""seqjax.interop <-> Flax linen param trees and carries (Flax is a dependency: always compared with it)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqjax as sj
from seqjax import interop

B, T, F, H = 3, 5, 4, 6
FLAX_CELLS = {"LSTMCell": (nn.LSTMCell, "lstm"), "OptimizedLSTMCell": (nn.OptimizedLSTMCell, "lstm"),
              "GRUCell": (nn.GRUCell, "gru"), "SimpleCell": (nn.SimpleCell, "simple_rnn")}
scan = jax.jit(sj.scan, static_argnums=0)


@functools.lru_cache(maxsize=None)
def make(kind, hidden=H):
    return {"lstm": sj.lstm, "gru": sj.gru, "simple_rnn": sj.simple_rnn}[kind](hidden)


def init_shapes(module, *args):
    """`module.init`'s variables as shapes only (traced, not run: no initialiser compiles)."""
    return jax.eval_shape(lambda: module.init(jax.random.key(0), *args))


def randomize(tree, seed):
    """Every leaf (array or shape) replaced by N(0, 0.5²) (Flax's zero biases would hide bias mix-ups)."""
    leaves, treedef = jax.tree.flatten(tree)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(treedef, [jnp.asarray(rng.normal(0, 0.5, x.shape), x.dtype) for x in leaves])


def xs_BTF(seed=1):
    return np.random.default_rng(seed).normal(size=(B, T, F)).astype(np.float32)


def close(a, b, atol=1e-5):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol)


@pytest.mark.parametrize("name", list(FLAX_CELLS))
def test_parity_with_flax_cells(name):
    module_cls, kind = FLAX_CELLS[name]
    rnn = nn.RNN(module_cls(H), return_carry=True)
    xs = xs_BTF()
    variables = randomize(init_shapes(rnn, xs), 1)
    rng = np.random.default_rng(2)
    flax_carry0 = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype),
                               module_cls(H).initialize_carry(jax.random.key(0), (B, F)))
    want_carry, want_ys = rnn.apply(variables, xs, initial_carry=flax_carry0)
    cell = make(kind)
    params = interop.from_flax(variables, cell)
    carry, ys = scan(cell, params, interop.carry_from_flax(flax_carry0, cell), xs)
    close(ys, want_ys)
    close(interop.carry_to_flax(carry, cell), want_carry)
    # back: seqjax params as a Flax tree give Flax the same numbers, in Flax's own tree structure
    tree = interop.to_flax(params, cell)
    assert jax.tree.structure(tree) == jax.tree.structure(variables["params"]["cell"])
    close(rnn.apply({"params": {"cell": tree}}, xs, initial_carry=flax_carry0), (want_carry, want_ys))


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell"])
def test_parity_with_flax_bidirectional_and_stack(name):
    module_cls, kind = FLAX_CELLS[name]

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x):
            # parent=None: each module belongs to the one it is passed to, not to Stack (Flax's compact idiom)
            rnn = lambda: nn.RNN(module_cls(H, parent=None), parent=None)  # noqa: E731
            x = nn.Bidirectional(rnn(), rnn())(x)
            return nn.RNN(module_cls(H - 2, parent=None), return_carry=True)(x)

    xs = xs_BTF()
    variables = randomize(init_shapes(Stack(), xs), 3)
    want_carry, want_ys = Stack().apply(variables, xs)
    cell = sj.chain(sj.bidirectional(make(kind), make(kind)), make(kind, H - 2))
    p = variables["params"]
    params = interop.from_flax([p["Bidirectional_0"], p["RNN_0"]], cell)  # a chain: one tree per part
    carry, ys = scan(cell, params, cell.initial_carry(B), xs)
    close(ys, want_ys)
    close(interop.carry_to_flax(carry, cell)[1], want_carry)
    tree = interop.to_flax(params, cell)
    assert jax.tree.structure(tree[0]) == jax.tree.structure(p["Bidirectional_0"])
    close(Stack().apply({"params": {"Bidirectional_0": tree[0], "RNN_0": {"cell": tree[1]}}}, xs),
          (want_carry, want_ys))


def test_dense_and_embed_trees():
    cell = sj.chain(sj.embed(9, F), make("gru"), sj.dense(2))
    rng = np.random.default_rng(4)
    trees = [{"embedding": rng.normal(size=(9, F)).astype(np.float32)},
             randomize(init_shapes(nn.GRUCell(H), jnp.zeros((1, H)), jnp.zeros((1, F)))["params"], 5),
             {"kernel": rng.normal(size=(H, 2)).astype(np.float32), "bias": rng.normal(size=(2,)).astype(np.float32)}]
    params = interop.from_flax(trees, cell)
    np.testing.assert_array_equal(params[0]["table"], trees[0]["embedding"])
    np.testing.assert_array_equal(params[2]["w"], trees[2]["kernel"])
    back = interop.to_flax(params, cell)
    close(back, tuple(trees), atol=0)


def test_round_trips():
    for kind in ("lstm", "gru", "simple_rnn"):
        cell = make(kind)
        module = nn.RNN({"lstm": nn.LSTMCell, "gru": nn.GRUCell, "simple_rnn": nn.SimpleCell}[kind](H))
        variables = randomize(init_shapes(module, xs_BTF()), 6)
        tree = variables["params"]["cell"]
        params = interop.from_flax({"cell": tree}, cell)  # an nn.RNN's tree unwraps
        close(interop.to_flax(params, cell), tree, atol=0)  # flax -> seqjax -> flax: exact
        close(interop.from_flax(interop.to_flax(params, cell), cell), params, atol=0)  # seqjax -> flax -> seqjax


def test_gru_bias_fold():
    """Flax's GRU has no recurrent bias on z and r: to_flax folds b_h's z, r blocks into the input biases;
    the numbers are unchanged, and the refolded params compute the same outputs."""
    cell = make("gru")
    shapes = jax.eval_shape(lambda k: cell.init(k, F), jax.random.key(0))
    params = randomize(shapes, 7)
    tree = interop.to_flax(params, cell)
    np.testing.assert_allclose(tree["iz"]["bias"], params["b_x"][:H] + params["b_h"][:H], atol=0)
    np.testing.assert_allclose(tree["hn"]["bias"], params["b_h"][2 * H:], atol=0)
    refolded = interop.from_flax(tree, cell)
    np.testing.assert_array_equal(refolded["b_h"][:2 * H], np.zeros(2 * H, np.float32))
    xs = xs_BTF()
    close(scan(cell, refolded, cell.initial_carry(B), xs), scan(cell, params, cell.initial_carry(B), xs))


def test_lstm_carry_order():
    cell = make("lstm")
    h, c = jnp.ones((B, H)), jnp.full((B, H), 2.0)
    flax_carry = interop.carry_to_flax(sj.LSTMCarry(h=h, c=c), cell)
    assert isinstance(flax_carry, tuple) and float(flax_carry[0][0, 0]) == 2.0  # Flax's (c, h)
    back = interop.carry_from_flax(flax_carry, cell)
    assert isinstance(back, sj.LSTMCarry) and float(back.h[0, 0]) == 1.0 and float(back.c[0, 0]) == 2.0


def test_errors():
    lstm_tree = randomize(init_shapes(nn.LSTMCell(H), (jnp.zeros((1, H)),) * 2, jnp.zeros((1, F)))["params"], 0)
    with pytest.raises(ValueError, match=r"from_flax: Flax's GRUCell is the reset_after=True form"):
        interop.from_flax(lstm_tree, sj.gru(H, reset_after=False))
    with pytest.raises(ValueError, match=r"to_flax: .*sj.gru\(6, reset_after=False\) cannot be represented"):
        interop.to_flax(None, sj.gru(H, reset_after=False))
    with pytest.raises(ValueError,
                       match=r"must be a Flax GRUCell param tree .* for sj.gru\(6\); got \{'hf': \['bias', 'kernel'\]"):
        interop.from_flax(lstm_tree, make("gru"))
    with pytest.raises(ValueError, match=r"\['ii'\]\['kernel'\] must have shape \(4, 7\) for sj.lstm\(7\); got"):
        interop.from_flax(lstm_tree, sj.lstm(H + 1))
    with pytest.raises(TypeError, match="for a chain of 2 parts, variables\\['params'\\] must be a list or tuple"):
        interop.from_flax(lstm_tree, sj.chain(make("lstm"), make("lstm")))
    with pytest.raises(ValueError, match="nn.Bidirectional's tree with keys"):
        interop.from_flax(lstm_tree, sj.bidirectional(make("lstm"), make("lstm")))
    with pytest.raises(TypeError, match=r"carry_from_flax: carry must be a Flax LSTM carry \(c, h\)"):
        interop.carry_from_flax(jnp.zeros((B, H)), make("lstm"))
    with pytest.raises(ValueError, match=r"carry h must have shape \(\?, 6\)"):
        interop.carry_from_flax(jnp.zeros((B, H + 1)), make("gru"))
