"""`sj.bidirectional` and `sj.repeat`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqjax as sj

B, T, F = 3, 8, 4


def _xs(seed=0):
    return np.random.default_rng(seed).normal(size=(B, T, F)).astype(np.float32)


@pytest.mark.parametrize("merge", ["concat", "sum", "mul", "ave"])
def test_bidirectional_is_a_forward_and_a_reversed_pass(merge):
    fwd, bwd = (sj.lstm(5), sj.gru(5)) if merge != "concat" else (sj.lstm(5), sj.gru(3))
    layer = sj.bidirectional(fwd, bwd, merge=merge)
    params = layer.init(jax.random.key(0), F)
    xs = _xs()
    carry, ys = sj.scan(layer, params, layer.initial_carry(B), xs)
    c_f, y_f = sj.scan(fwd, params.forward, fwd.initial_carry(B), xs)
    c_b, y_b = sj.scan(bwd, params.backward, bwd.initial_carry(B), xs[:, ::-1])
    y_b = y_b[:, ::-1]
    expected = {"concat": lambda: np.concatenate([y_f, y_b], -1), "sum": lambda: y_f + y_b,
                "mul": lambda: y_f * y_b, "ave": lambda: (y_f + y_b) / 2}[merge]()
    np.testing.assert_allclose(ys, expected, atol=1e-6)
    np.testing.assert_allclose(carry.forward.h, c_f.h, atol=1e-6)
    np.testing.assert_allclose(carry.backward.h, c_b.h, atol=1e-6)


def test_bidirectional_with_mask_starts_backward_pass_at_last_valid_step():
    layer = sj.bidirectional(sj.lstm(4), sj.lstm(6))
    params = layer.init(jax.random.key(1), F)
    xs = _xs(1)
    lengths = [8, 5, 3]
    mask = np.arange(T)[None, :] < np.array(lengths)[:, None]
    carry, ys = sj.scan(layer, params, layer.initial_carry(B), xs, mask=mask)
    for b, n in enumerate(lengths):
        c_b, ys_b = sj.scan(layer, params, layer.initial_carry(1), xs[b:b + 1, :n])
        np.testing.assert_allclose(ys[b, :n], ys_b[0], atol=1e-5)
        np.testing.assert_allclose(carry.backward.c[b], c_b.backward.c[0], atol=1e-5)
        np.testing.assert_allclose(carry.forward.h[b], c_b.forward.h[0], atol=1e-5)


def test_bidirectional_inside_a_chain_and_no_step():
    model = sj.chain(sj.bidirectional(sj.gru(4), sj.gru(4)), sj.lstm(3), sj.dense(2))
    params = model.init(jax.random.key(2), F)
    assert params[1]["w_x"].shape == (8, 12)
    _, ys = sj.scan(model, params, model.initial_carry(B), _xs(2))
    assert ys.shape == (B, T, 2)
    with pytest.raises(TypeError, match="sj.bidirectional: .*no step-wise form"):
        sj.rollout(model, params, model.initial_carry(B), jnp.ones((B, F)), 3)


def test_bidirectional_bad_merge():
    with pytest.raises(ValueError, match="sj.bidirectional: merge must be one of"):
        sj.bidirectional(sj.lstm(2), sj.lstm(2), merge="max")


def test_repeat_vector():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    r = sj.repeat(x, 4)
    assert r.shape == (2, 4, 3)
    for t in range(4):
        np.testing.assert_array_equal(r[:, t], x)
    with pytest.raises(ValueError, match=r"sj.repeat: x must be \[batch, features\]; got \(3,\)"):
        sj.repeat(np.ones(3), 2)
    with pytest.raises(ValueError, match="sj.repeat: steps must be an int >= 1; got 0"):
        sj.repeat(x, 0)


def test_bidirectional_masked_steps_output_zeros_by_default_as_keras():
    layer = sj.bidirectional(sj.gru(4), sj.lstm(3))
    params = layer.init(jax.random.key(3), F)
    xs = _xs(3)
    mask = np.ones((B, T), bool)
    mask[0, 5:] = False
    mask[1, :2] = False
    mask[2, 3] = False
    _, ys = sj.scan(layer, params, layer.initial_carry(B), xs, mask=mask)
    assert not np.any(np.asarray(ys)[~mask])
    _, prev = sj.scan(layer, params, layer.initial_carry(B), xs, mask=mask, masked_output="previous")
    np.testing.assert_allclose(np.asarray(prev)[mask], np.asarray(ys)[mask], atol=1e-6)
    np.testing.assert_allclose(prev[2, 3, :4], prev[2, 2, :4], atol=1e-6)  # forward half: previous in time
    np.testing.assert_allclose(prev[2, 3, 4:], prev[2, 4, 4:], atol=1e-6)  # backward half: previous in its order
