"""`sj.scan`: equals a loop of `step`, chunking with the carry passed on, mask, reset, reverse, unroll,
dropout, vmap, grads and compile-once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from jax.test_util import check_grads

import seqjax as sj
import reference as ref

B, T, F, H = 3, 9, 4, 5


def _xs(seed=0, shape=(B, T, F)):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


MODELS = {
    "lstm": lambda: sj.lstm(H),
    "gru": lambda: sj.gru(H),
    "gru_v1": lambda: sj.gru(H, reset_after=False),
    "simple_rnn": lambda: sj.simple_rnn(H),
    "stack": lambda: sj.chain(sj.lstm(H), sj.gru(6), sj.dense(2)),
}


def _model(name, seed=0):
    cell = MODELS[name]()
    return cell, cell.init(jax.random.key(seed), F)


def _loop(cell, params, carry, xs):
    ys = []
    for t in range(xs.shape[1]):
        carry, y = cell.step(params, carry, jnp.asarray(xs[:, t]))
        ys.append(y)
    return carry, jnp.stack(ys, 1)


def _close(a, b, atol=1e-5):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=atol), a, b)


@pytest.mark.parametrize("name", list(MODELS))
def test_scan_equals_python_loop_of_step(name):
    cell, params = _model(name)
    xs = _xs()
    carry0 = jax.tree.map(lambda a: a + 0.3, cell.initial_carry(B))
    _close(sj.scan(cell, params, carry0, xs), _loop(cell, params, carry0, xs))


@settings(max_examples=6, deadline=None)
@given(cuts=st.lists(st.integers(1, 11), min_size=1, max_size=3, unique=True), name=st.sampled_from(["lstm", "stack"]))
def test_chunks_with_carry_passed_on_equal_one_scan(cuts, name):
    cell, params = _model(name)
    xs = _xs(1, (B, 12, F))
    whole_carry, whole_ys = sj.scan(cell, params, cell.initial_carry(B), xs)
    carry, parts = cell.initial_carry(B), []
    bounds = [0, *sorted(cuts), 12]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        carry, ys = sj.scan(cell, params, carry, xs[:, lo:hi])
        parts.append(ys)
    _close(jnp.concatenate(parts, 1), whole_ys)
    _close(carry, whole_carry)


def _mask_cases():
    m = np.ones((B, T), bool)
    m[0, :3] = False          # left padding
    m[1, 2] = m[1, 5] = False  # holes
    m[2, 6:] = False          # right padding
    return m


def test_mask_freezes_carry_and_repeats_previous_output():
    cell, params = _model("lstm")
    xs, mask = _xs(2), _mask_cases()
    carry, ys = sj.scan(cell, params, cell.initial_carry(B), xs, mask=mask)
    ys_ref, h_ref, c_ref = ref.run_lstm(params, xs, mask_BT=mask)
    np.testing.assert_allclose(ys, ys_ref, atol=2e-5)
    np.testing.assert_allclose(carry.h, h_ref, atol=2e-5)
    np.testing.assert_allclose(carry.c, c_ref, atol=2e-5)
    # left padding: zeros before the first valid step; right padding: the final carry is the last valid one
    assert not np.any(ys[0, :3])
    _, ys_short = sj.scan(cell, params, cell.initial_carry(1), xs[2:3, :6])
    np.testing.assert_allclose(carry.h[2], ys_short[0, -1], atol=1e-6)
    np.testing.assert_allclose(ys[2, 6:], np.broadcast_to(ys_short[0, -1], (T - 6, H)), atol=1e-6)


def test_mask_on_gru_and_a_stack_matches_unpadded_runs():
    for name in ("gru", "stack"):
        cell, params = _model(name)
        xs, mask = _xs(3), _mask_cases()
        carry, ys = sj.scan(cell, params, cell.initial_carry(B), xs, mask=mask)
        # each sample equals a run over its valid steps only
        for b in range(B):
            valid = np.flatnonzero(mask[b])
            c_b, ys_b = sj.scan(cell, params, cell.initial_carry(1), xs[b:b + 1, valid])
            np.testing.assert_allclose(ys[b, valid], ys_b[0], atol=1e-5)
            _close(jax.tree.map(lambda a: a[b:b + 1], carry), c_b)


def test_masked_output_zero_option():
    cell, params = _model("stack")
    xs, mask = _xs(4), _mask_cases()
    _, ys_prev = sj.scan(cell, params, cell.initial_carry(B), xs, mask=mask)
    _, ys_zero = sj.scan(cell, params, cell.initial_carry(B), xs, mask=mask, masked_output="zero")
    assert not np.any(np.asarray(ys_zero)[~mask])
    np.testing.assert_allclose(np.asarray(ys_zero)[mask], np.asarray(ys_prev)[mask], atol=1e-6)
    assert np.any(np.asarray(ys_prev)[~mask] != 0)


def test_reset_starts_a_new_episode_inside_the_batch():
    cell, params = _model("stack")
    xs = _xs(5)
    reset = np.zeros((B, T), bool)
    reset[0, 4] = True
    reset[2, 2] = reset[2, 7] = True
    carry0 = jax.tree.map(lambda a: a + 0.5, cell.initial_carry(B))
    carry, ys = sj.scan(cell, params, carry0, xs, reset=reset)
    # sample 0 after the reset equals a fresh run on its tail; before it equals the run from carry0
    _, tail = sj.scan(cell, params, cell.initial_carry(1), xs[0:1, 4:])
    np.testing.assert_allclose(ys[0, 4:], tail[0], atol=1e-5)
    _, head = sj.scan(cell, params, jax.tree.map(lambda a: a[:1], carry0), xs[0:1, :4])
    np.testing.assert_allclose(ys[0, :4], head[0], atol=1e-5)
    c_last, last = sj.scan(cell, params, cell.initial_carry(1), xs[2:3, 7:])
    np.testing.assert_allclose(ys[2, 7:], last[0], atol=1e-5)
    _close(jax.tree.map(lambda a: a[2:3], carry), c_last)
    # sample 1 never resets
    _, full1 = sj.scan(cell, params, jax.tree.map(lambda a: a[1:2], carry0), xs[1:2])
    np.testing.assert_allclose(ys[1], full1[0], atol=1e-5)


def test_reverse_processes_backwards_with_aligned_outputs():
    cell, params = _model("lstm")
    xs = _xs(6)
    carry, ys = sj.scan(cell, params, cell.initial_carry(B), xs, reverse=True)
    carry_f, ys_f = sj.scan(cell, params, cell.initial_carry(B), xs[:, ::-1])
    np.testing.assert_allclose(ys, ys_f[:, ::-1], atol=1e-6)
    _close(carry, carry_f)
    mask = _mask_cases()
    _, ys_m = sj.scan(cell, params, cell.initial_carry(B), xs, reverse=True, mask=mask)
    _, ys_mf = sj.scan(cell, params, cell.initial_carry(B), xs[:, ::-1], mask=mask[:, ::-1])
    np.testing.assert_allclose(ys_m, ys_mf[:, ::-1], atol=1e-6)


def test_unroll_gives_the_same_numbers():
    cell, params = _model("stack")
    xs = _xs(7)
    _close(sj.scan(cell, params, cell.initial_carry(B), xs, unroll=4),
           sj.scan(cell, params, cell.initial_carry(B), xs))


def test_input_dropout_uses_one_mask_for_every_step():
    Fd = 40
    cell = sj.simple_rnn(Fd, dropout=0.5)
    params = {"w_x": jnp.eye(Fd), "w_h": jnp.zeros((Fd, Fd)), "b": jnp.zeros(Fd)}
    xs = np.full((4, 6, Fd), 0.1, np.float32)  # the same input at every step
    _, ys = sj.scan(cell, params, cell.initial_carry(4), xs, key=jax.random.key(0))
    ys = np.asarray(ys)
    for t in range(1, 6):
        np.testing.assert_array_equal(ys[:, t], ys[:, 0])
    dropped = ys[:, 0] == 0
    assert 0.3 < dropped.mean() < 0.7
    np.testing.assert_allclose(ys[:, 0][~dropped], np.tanh(0.2), rtol=1e-6)  # kept inputs scaled by 1/(1-p)
    assert not np.array_equal(dropped[0], dropped[1])  # a different mask per sample
    _, ys2 = sj.scan(cell, params, cell.initial_carry(4), xs, key=jax.random.key(1))
    assert not np.array_equal(np.asarray(ys2)[:, 0] == 0, dropped)  # another key, another mask
    _, ys_eval = sj.scan(cell, params, cell.initial_carry(4), xs)  # no key: no dropout
    np.testing.assert_allclose(ys_eval, np.tanh(0.1), rtol=1e-6)


def test_recurrent_dropout_matches_reference_with_the_same_masks():
    cell = sj.lstm(H, dropout=0.3, recurrent_dropout=0.4)
    params = cell.init(jax.random.key(0), F)
    xs, key = _xs(8), jax.random.key(42)
    _, ys = sj.scan(cell, params, cell.initial_carry(B), xs, key=key)
    noise = cell.sample_noise(key, params, B, jnp.float32)
    assert noise["x"].shape == (B, F) and noise["h"].shape == (B, H)
    kept = np.asarray(noise["h"])
    np.testing.assert_allclose(np.unique(kept), [0.0, 1 / 0.6], rtol=1e-6)
    P, h, c = ref.np64(params), np.zeros((B, H)), np.zeros((B, H))
    for t in range(T):
        x = xs[:, t] * np.asarray(noise["x"], np.float64)
        z = x @ P["w_x"] + (h * kept) @ P["w_h"] + P["b"]
        i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
        c = ref.sigmoid(f) * c + ref.sigmoid(i) * np.tanh(g)
        h = ref.sigmoid(o) * np.tanh(c)
        np.testing.assert_allclose(ys[:, t], h, atol=2e-5)


def test_dropout_in_a_stack_draws_per_layer_masks():
    cell = sj.chain(sj.gru(H, dropout=0.5), sj.lstm(H, recurrent_dropout=0.5), sj.dense(2))
    params = cell.init(jax.random.key(0), F)
    noise = cell.sample_noise(jax.random.key(1), params, B)
    assert set(noise[0]) == {"x"} and set(noise[1]) == {"h"} and noise[2] is None
    xs = _xs(9)
    _, a = sj.scan(cell, params, cell.initial_carry(B), xs, key=jax.random.key(1))
    _, b = sj.scan(cell, params, cell.initial_carry(B), xs, key=jax.random.key(1))
    _, c = sj.scan(cell, params, cell.initial_carry(B), xs)
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(np.asarray(a) - np.asarray(c))) > 1e-3


def test_vmap_over_params_ensemble_and_over_a_leading_data_axis():
    cell = sj.chain(sj.lstm(H), sj.dense(2))
    keys = jax.random.split(jax.random.key(0), 4)
    ensemble = jax.vmap(lambda k: cell.init(k, F))(keys)
    xs = _xs(10)
    run = lambda p, x: sj.scan(cell, p, cell.initial_carry(x.shape[0]), x)  # noqa: E731
    carries, ys = jax.vmap(run, in_axes=(0, None))(ensemble, xs)
    assert ys.shape == (4, B, T, 2)
    for e in range(4):
        p_e = jax.tree.map(lambda a: a[e], ensemble)
        np.testing.assert_allclose(ys[e], run(p_e, xs)[1], atol=1e-5)
    params = cell.init(keys[0], F)
    xs_E = _xs(11, (5, B, T, F))
    _, ys_E = jax.vmap(run, in_axes=(None, 0))(params, xs_E)
    np.testing.assert_allclose(ys_E[3], run(params, xs_E[3])[1], atol=1e-5)


def test_jit_compiles_once_per_shape_and_batch_is_free():
    cell, params = _model("stack")
    traces = []

    @jax.jit
    def f(params, carry, xs):
        traces.append(xs.shape)
        return sj.scan(cell, params, carry, xs)

    f(params, cell.initial_carry(B), _xs(12))
    f(jax.tree.map(lambda a: a * 1.1, params), cell.initial_carry(B), _xs(13))
    assert len(traces) == 1
    _, ys = f(params, cell.initial_carry(7), _xs(14, (7, T, F)))  # a new batch size: one new trace
    assert ys.shape == (7, T, 2) and len(traces) == 2


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_gradients_match_finite_differences(name):
    with jax.enable_x64(True):
        cell = sj.lstm(3, dtype=jnp.float64) if name == "lstm" else sj.gru(3, dtype=jnp.float64)
        params = cell.init(jax.random.key(0), 2)
        xs = jnp.asarray(_xs(15, (2, 4, 2)), jnp.float64)
        carry0 = jax.tree.map(lambda a: a + 0.1, cell.initial_carry(2, jnp.float64))

        def f(params, carry, xs):
            carry, ys = sj.scan(cell, params, carry, xs)
            return jnp.sum(ys ** 2) + jnp.sum(carry.h)

        check_grads(f, (params, carry0, xs), order=1, modes=["rev"], atol=1e-5, rtol=1e-5)
