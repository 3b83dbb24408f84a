"""Each cell against an independent float64 NumPy reference; options, initialisers and dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqjax as sj
import reference as ref

B, T, F, H = 3, 7, 4, 5


@pytest.fixture
def xs():
    return np.random.default_rng(0).normal(size=(B, T, F)).astype(np.float32)


def test_lstm_matches_numpy_reference(xs):
    p = ref.random_params("lstm", 1, F, H)
    h0 = np.random.default_rng(2).normal(size=(B, H)).astype(np.float32)
    c0 = np.random.default_rng(3).normal(size=(B, H)).astype(np.float32)
    carry, ys = sj.scan(sj.lstm(H), p, sj.LSTMCarry(h0, c0), xs)
    ys_ref, h_ref, c_ref = ref.run_lstm(p, xs, h0, c0)
    np.testing.assert_allclose(ys, ys_ref, atol=2e-5)
    np.testing.assert_allclose(carry.h, h_ref, atol=2e-5)
    np.testing.assert_allclose(carry.c, c_ref, atol=2e-5)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_matches_numpy_reference(xs, reset_after):
    p = ref.random_params("gru", 4, F, H)
    h0 = np.random.default_rng(5).normal(size=(B, H)).astype(np.float32)
    carry, ys = sj.scan(sj.gru(H, reset_after=reset_after), p, sj.GRUCarry(h0), xs)
    ys_ref, h_ref = ref.run_gru(p, xs, h0, reset_after=reset_after)
    np.testing.assert_allclose(ys, ys_ref, atol=2e-5)
    np.testing.assert_allclose(carry.h, h_ref, atol=2e-5)


def test_gru_reset_after_forms_differ(xs):
    p = ref.random_params("gru", 4, F, H)
    _, ys_a = sj.scan(sj.gru(H), p, sj.gru(H).initial_carry(B), xs)
    _, ys_b = sj.scan(sj.gru(H, reset_after=False), p, sj.gru(H).initial_carry(B), xs)
    assert np.max(np.abs(np.asarray(ys_a) - np.asarray(ys_b))) > 1e-3


def test_simple_rnn_matches_numpy_reference(xs):
    p = ref.random_params("simple_rnn", 6, F, H)
    carry, ys = sj.scan(sj.simple_rnn(H), p, sj.simple_rnn(H).initial_carry(B), xs)
    ys_ref, h_ref = ref.run_simple_rnn(p, xs)
    np.testing.assert_allclose(ys, ys_ref, atol=2e-5)
    np.testing.assert_allclose(carry.h, h_ref, atol=2e-5)


def test_activation_options_change_the_maths(xs):
    p = ref.random_params("lstm", 1, F, H)
    cell = sj.lstm(H, activation="relu", recurrent_activation="hard_sigmoid")
    _, ys = sj.scan(cell, p, cell.initial_carry(B), xs)
    # reference with relu / hard sigmoid
    P = ref.np64(p)
    h = c = np.zeros((B, H))
    hs = lambda v: np.clip(v / 6 + 0.5, 0, 1)  # noqa: E731  (Keras 3 hard_sigmoid)
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    for t in range(T):
        z = xs[:, t].astype(np.float64) @ P["w_x"] + h @ P["w_h"] + P["b"]
        i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
        c = hs(f) * c + hs(i) * relu(g)
        h = hs(o) * relu(c)
    np.testing.assert_allclose(ys[:, -1], h, atol=2e-5)
    cell2 = sj.lstm(H, activation=jnp.tanh, recurrent_activation=jax.nn.sigmoid)
    _, ys2 = sj.scan(cell2, p, cell2.initial_carry(B), xs)
    np.testing.assert_allclose(ys2, ref.run_lstm(p, xs)[0], atol=2e-5)


def test_lstm_default_init_is_keras_like():
    H2, F2 = 16, 6
    p = sj.lstm(H2).init(jax.random.key(0), F2)
    assert p["w_x"].shape == (F2, 4 * H2) and p["w_h"].shape == (H2, 4 * H2) and p["b"].shape == (4 * H2,)
    limit = np.sqrt(6.0 / (F2 + 4 * H2))  # Glorot-uniform over [F, 4H]
    assert np.all(np.abs(p["w_x"]) <= limit) and np.max(np.abs(p["w_x"])) > 0.8 * limit
    # orthogonal recurrent kernel: rows of [H, 4H] orthonormal
    np.testing.assert_allclose(p["w_h"] @ p["w_h"].T, np.eye(H2), atol=1e-5)
    expected_b = np.zeros(4 * H2)
    expected_b[H2:2 * H2] = 1.0  # forget block
    np.testing.assert_array_equal(p["b"], expected_b)
    p_nf = sj.lstm(H2, unit_forget_bias=False).init(jax.random.key(0), F2)
    np.testing.assert_array_equal(p_nf["b"], np.zeros(4 * H2))


def test_gru_and_rnn_default_init():
    p = sj.gru(8).init(jax.random.key(1), 3)
    assert {k: v.shape for k, v in p.items()} == {"w_x": (3, 24), "w_h": (8, 24), "b_x": (24,), "b_h": (24,)}
    np.testing.assert_allclose(p["w_h"] @ p["w_h"].T, np.eye(8), atol=1e-5)
    assert not np.any(p["b_x"]) and not np.any(p["b_h"])
    p = sj.simple_rnn(8).init(jax.random.key(1), 3)
    np.testing.assert_allclose(p["w_h"] @ p["w_h"].T, np.eye(8), atol=1e-5)


def test_custom_initialisers_are_used():
    ones = lambda key, shape, dtype=jnp.float32: jnp.ones(shape, dtype)  # noqa: E731
    p = sj.lstm(4, kernel_init=ones, recurrent_init=ones, bias_init=ones, unit_forget_bias=False).init(
        jax.random.key(0), 2)
    assert all(np.all(v == 1) for v in p.values())


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float64])
def test_dtypes(xs, dtype):
    with jax.enable_x64(dtype == jnp.float64):
        cell = sj.chain(sj.lstm(H, dtype=dtype), sj.gru(3, dtype=dtype), sj.dense(2, dtype=dtype))
        params = cell.init(jax.random.key(0), F)
        assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(params))
        carry, ys = sj.scan(cell, params, cell.initial_carry(B, dtype), jnp.asarray(xs, dtype))
        assert ys.dtype == dtype and all(leaf.dtype == dtype for leaf in jax.tree.leaves(carry))
        # agrees with float32 computation to the dtype's precision
        p32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
        _, ys32 = sj.scan(cell, p32, cell.initial_carry(B), jnp.asarray(xs))
        tol = 5e-2 if dtype == jnp.bfloat16 else 1e-5
        np.testing.assert_allclose(np.asarray(ys, np.float32), ys32, atol=tol)


def test_float64_lstm_exact_against_reference(xs):
    with jax.enable_x64(True):
        p = {k: jnp.asarray(v, jnp.float64) for k, v in ref.random_params("lstm", 9, F, H).items()}
        x64 = np.asarray(xs, np.float64)
        carry, ys = sj.scan(sj.lstm(H, dtype=jnp.float64), p, sj.lstm(H).initial_carry(B, jnp.float64), x64)
        np.testing.assert_allclose(ys, ref.run_lstm(p, x64)[0], rtol=1e-12, atol=1e-12)


def test_dense_and_activation_per_step(xs):
    cell = sj.chain(sj.dense(6, activation="relu"), sj.activation("softmax"))
    params = cell.init(jax.random.key(3), F)
    _, ys = sj.scan(cell, params, cell.initial_carry(B), xs)
    w, b = np.asarray(params[0]["w"], np.float64), np.asarray(params[0]["b"], np.float64)
    pre = np.maximum(xs @ w + b, 0)
    expected = np.exp(pre) / np.exp(pre).sum(-1, keepdims=True)
    np.testing.assert_allclose(ys, expected, atol=1e-6)
    assert sj.dense(6, use_bias=False).init(jax.random.key(0), F).keys() == {"w"}


def test_chain_init_passes_the_size_through_an_activation():
    """A layer after `sj.activation` (which takes any size) gets the size that reaches it, not 1."""
    cell = sj.chain(sj.dense(6), sj.activation("tanh"), sj.lstm(H), sj.activation("relu"), sj.dense(2))
    params = cell.init(jax.random.key(4), F)
    assert params[2]["w_x"].shape == (6, 4 * H) and params[4]["w"].shape == (H, 2)
    assert cell.input_spec(params).shape == (F,)


def test_embed_lookup_and_out_of_range_ids():
    cell = sj.embed(11, 4)
    params = cell.init(jax.random.key(0), None)
    table = np.asarray(params["table"])
    assert table.shape == (11, 4) and np.all(np.abs(table) <= 0.05)
    ids = np.array([[0, 3, 10], [5, 5, 1]], np.int32)
    carry, ys = sj.scan(cell, params, cell.initial_carry(2), ids)
    assert carry == ()
    np.testing.assert_array_equal(ys, table[ids])
    _, bad = sj.scan(cell, params, cell.initial_carry(1), np.array([[11, 2]], np.int32))
    assert np.all(np.isnan(bad[0, 0])) and not np.any(np.isnan(bad[0, 1]))


def test_embed_gru_dense_language_model_shapes():
    model = sj.chain(sj.embed(13, 6), sj.gru(7), sj.gru(5), sj.dense(13))
    params = model.init(jax.random.key(0), None)
    ids = np.random.default_rng(0).integers(0, 13, size=(2, 9)).astype(np.int32)
    carry, logits = sj.scan(model, params, model.initial_carry(2), ids)
    assert logits.shape == (2, 9, 13)
    assert [type(c).__name__ for c in carry] == ["tuple", "GRUCarry", "GRUCarry", "tuple"]


def test_chain_equals_manual_stacking(xs):
    l1, l2, head = sj.lstm(6), sj.gru(5), sj.dense(2)
    model = sj.chain(l1, l2, head)
    params = model.init(jax.random.key(0), F)
    assert [p["w_x"].shape[0] for p in params[:2]] == [F, 6] and params[2]["w"].shape == (5, 2)
    carry, ys = sj.scan(model, params, model.initial_carry(B), xs)
    c1, y1 = sj.scan(l1, params[0], l1.initial_carry(B), xs)
    c2, y2 = sj.scan(l2, params[1], l2.initial_carry(B), y1)
    _, y3 = sj.scan(head, params[2], (), y2)
    np.testing.assert_allclose(ys, y3, atol=1e-6)
    np.testing.assert_allclose(carry[0].c, c1.c, atol=1e-6)
    np.testing.assert_allclose(carry[1].h, c2.h, atol=1e-6)
