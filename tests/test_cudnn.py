"""The cuDNN LSTM path (`seqjax.fast.cudnn`): weight layout, values and gradients, the hand-over off GPU.

No GPU here: the flat weights go through JAX's reference implementation of the cuDNN call
(`jax.experimental.rnn.lstm_ref` after `unpack_lstm_weights`, code independent of seqjax), which must give
the float64 NumPy LSTM's numbers. Sizes all differ (B=3, T=7, F=5, H=4) so a wrong axis cannot pass.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn

import reference as ref
import seqjax as sj
from seqjax.fast import cudnn

B, T, F, H = 3, 7, 5, 4


def _params(seed=0):
    return {k: jnp.asarray(v, jnp.float32) for k, v in ref.random_params("lstm", seed, F, H).items()}


def _inputs(seed=1):
    rng = np.random.default_rng(seed)
    xs = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
    carry = sj.LSTMCarry(*(jnp.asarray(rng.normal(0, 0.5, (B, H)), jnp.float32) for _ in range(2)))
    return xs, carry


def test_flat_weights_are_cudnns_layout_and_round_trip():
    p = _params()
    w = cudnn.to_cudnn_weights(p)
    assert w.shape == (4 * H * (F + H) + 8 * H,)
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(w, F, H, 1, False)
    np.testing.assert_array_equal(w_ih[0], p["w_x"].T)
    np.testing.assert_array_equal(w_hh[0], p["w_h"].T)
    np.testing.assert_array_equal(b_ih[0], p["b"])
    np.testing.assert_array_equal(b_hh[0], np.zeros(4 * H))
    back = cudnn.from_cudnn_weights(w, F, H)
    for k in p:
        np.testing.assert_array_equal(back[k], p[k])
    # cuDNN's two biases add up
    doubled = w.at[-4 * H:].set(jnp.arange(4 * H, dtype=jnp.float32))
    np.testing.assert_allclose(cudnn.from_cudnn_weights(doubled, F, H)["b"], p["b"] + np.arange(4 * H), rtol=1e-6)


def test_layer_through_the_cudnn_call_gives_the_float64_lstm():
    p, (xs, carry) = _params(), _inputs()
    new_carry, ys_TB = cudnn.layer_sequence(p, carry, jnp.swapaxes(xs, 0, 1), cudnn.reference_call)
    want_ys, want_h, want_c = ref.run_lstm(ref.np64(p), np.float64(xs), np.float64(carry.h), np.float64(carry.c))
    np.testing.assert_allclose(np.swapaxes(ys_TB, 0, 1), want_ys, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_carry.h, want_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_carry.c, want_c, rtol=1e-5, atol=1e-6)
    assert isinstance(new_carry, sj.LSTMCarry)


def test_gradients_through_the_cudnn_call_match_the_reference_loop():
    p, (xs, carry) = _params(), _inputs()
    w = jnp.sin(jnp.arange(B * T * H, dtype=jnp.float32)).reshape(T, B, H)

    def through_cudnn(p, carry, xs):
        c, ys = cudnn.layer_sequence(p, carry, jnp.swapaxes(xs, 0, 1), cudnn.reference_call)
        return jnp.sum(w * ys) + jnp.sum(jnp.cos(c.h)) + jnp.sum(jnp.cos(c.c))

    def through_steps(p, carry, xs):
        c, ys = sj.scan(sj.lstm(H)._replace(sequence=None), p, carry, xs)
        return jnp.sum(w * jnp.swapaxes(ys, 0, 1)) + jnp.sum(jnp.cos(c.h)) + jnp.sum(jnp.cos(c.c))

    got = jax.grad(through_cudnn, argnums=(0, 1, 2))(p, carry, xs)
    want = jax.grad(through_steps, argnums=(0, 1, 2))(p, carry, xs)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def test_cudnn_lstm_runs_the_cells_own_path_where_cudnn_is_not_available(monkeypatch):
    if jax.default_backend() == "cpu":
        assert not cudnn.cudnn_available()
    monkeypatch.setattr(cudnn, "cudnn_available", lambda: False)  # as on CPU, whatever backend runs this
    cell = sj.lstm(H)
    model, fast = sj.chain(cell, sj.dense(F)), sj.chain(cudnn.cudnn_lstm(cell), sj.dense(F))
    params = model.init(jax.random.key(0), F)
    xs, carry = _inputs()
    start = (carry, ())
    got, want = sj.scan(fast, params, start, xs), sj.scan(model, params, start, xs)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(want)):  # the dense runs after the layer here,
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)  # inside the fast path's loop there
    # rollout is the cell's (the same `step`, and on CPU the same closed-loop kernel)
    np.testing.assert_array_equal(sj.rollout(fast, params, start, xs[:, 0], 3)[1],
                                  sj.rollout(model, params, start, xs[:, 0], 3)[1])


def test_cudnn_lstm_calls_cudnn_only_where_it_can(monkeypatch):
    """With cuDNN "available" (the call replaced by its reference implementation, counted), `scan` of the
    cudnn cell gives the reference loop's numbers; `mask`, recurrent dropout and float64 go the cell's way."""
    calls = []

    def counted(*args):
        calls.append(args[0].shape)
        return cudnn.reference_call(*args)

    monkeypatch.setattr(cudnn, "cudnn_available", lambda: True)
    monkeypatch.setattr(cudnn, "cudnn_call", counted)
    p, (xs, carry) = _params(), _inputs()
    cell = sj.lstm(H, dropout=0.3, recurrent_dropout=0.0)
    fast, slow = cudnn.cudnn_lstm(cell), cell._replace(sequence=None)
    key = jax.random.key(3)
    for kw in ({}, {"key": key}, {"reverse": True}):
        got, want = sj.scan(fast, p, carry, xs, **kw), sj.scan(slow, p, carry, xs, **kw)
        for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    assert calls == [(B, T, F)] * 3
    mask = jnp.asarray(np.random.default_rng(4).random((B, T)) < 0.7)
    sj.scan(fast, p, carry, xs, mask=mask)
    rec = cudnn.cudnn_lstm(sj.lstm(H, recurrent_dropout=0.3))
    sj.scan(rec, p, carry, xs, key=key)
    sj.scan(rec, p, carry, xs)  # no key: no dropout, cuDNN can run it
    with jax.enable_x64():
        sj.scan(fast, jax.tree.map(jnp.float64, p), jax.tree.map(jnp.float64, carry), jnp.float64(xs))
    assert calls == [(B, T, F)] * 4


def test_cudnn_lstm_errors_name_the_function_and_argument():
    with pytest.raises(TypeError, match=r"cudnn_lstm: cell must be a seqjax Cell .* got dict"):
        cudnn.cudnn_lstm({})
    with pytest.raises(TypeError, match=r"cudnn_lstm: cell must be an sj.lstm cell; got a 'gru' cell"):
        cudnn.cudnn_lstm(sj.gru(H))
    with pytest.raises(ValueError, match=r"cudnn_lstm: cuDNN's LSTM has tanh as its activation; .*'relu'"):
        cudnn.cudnn_lstm(sj.lstm(H, activation="relu"))
    with pytest.raises(ValueError, match=r"recurrent_activation; .*'hard_sigmoid'"):
        cudnn.cudnn_lstm(sj.lstm(H, recurrent_activation="hard_sigmoid"))
    with pytest.raises(ValueError, match=r"from_cudnn_weights: weights must have shape \(176,\) for features=5, "
                                         r"hidden=4; got \(179,\)"):
        cudnn.from_cudnn_weights(jnp.zeros(179), F, H)
