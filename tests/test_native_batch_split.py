"""The native kernels' two ways of splitting work over cores (`kernels/lstm_cpu.cc`).

With at least two chunks of batch rows per thread (chunks of 6 rows; of 12 from a batch of 96) each thread runs
whole chunks through every step alone; with fewer rows, and on one thread, the threads own groups of hidden
units and meet every step. The backward pass splits by rows from two chunks per thread (eight where the LSTM
recomputes its gates) where its weights stay in the L2 cache. Both splits must give the float64 reference's
numbers and each other's (the forward passes: the same bits). On a machine with one core both calls below run
by units (`threads=0` is then one thread).
"""

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference as ref
from seqjax.fast import native

# batches split by rows on two cores: 4 chunks of 6 (the last partial), 5 of 6, 9 of 12 (the last of 4 rows)
BATCHES = [20, 27, 100]


def _arrays(cell, b, t, f, h, seed=0):
    rng = np.random.default_rng(seed + 100)
    params = {k: jnp.asarray(v) for k, v in ref.random_params(cell, seed, f, h).items()}
    xs, h0, c0 = (jnp.asarray(rng.normal(0, 0.5, s), jnp.float32) for s in ((b, t, f), (b, h), (b, h)))
    w_d, b_d = (jnp.asarray(rng.normal(0, 0.4, s), jnp.float32) for s in ((h, f), (f,)))
    return params, xs, h0, c0, w_d, b_d


def _kernels(cell, params, xs, h0, c0, w_d, b_d, threads):
    """Every forward kernel of `cell` on these inputs: outputs and final carries."""
    xs_TB = jnp.swapaxes(xs, 0, 1)
    if cell == "lstm":
        k, weights, carry = native.LSTM, (params["w_x"], params["w_h"], params["b"], None), (h0, c0)
    else:
        k, weights, carry = native.GRU, (params["w_x"], params["w_h"], params["b_x"], params["b_h"]), (h0,)
    out = {
        "forward": native.layer_forward(k, weights, carry, xs_TB, threads=threads),
        "forward time-major": native.layer_forward(k, weights, carry, xs_TB, batch_major=False, threads=threads),
        "head": native.layer_forward(k, weights, carry, xs_TB, head=(w_d, b_d), threads=threads),
        "closed loop": native.layer_closed_loop(k, weights, carry, xs[:, 0], w_d, b_d, 7, threads=threads),
    }
    if cell == "lstm":
        out["train"] = native.layer_train(k, weights, carry, xs_TB, threads=threads)
    return out


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("b", BATCHES)
def test_rows_and_units_give_the_same_bits(cell, b):
    args = _arrays(cell, b, 5, 3, 37)
    by_units, split = (jax.jit(lambda *a, n=n: _kernels(cell, *a, threads=n))(*args) for n in (1, 0))
    jax.tree.map(np.testing.assert_array_equal, by_units, split)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("b", BATCHES)
def test_split_by_rows_matches_float64_numpy(cell, b):
    params, xs, h0, c0, w_d, b_d = _arrays(cell, b, 6, 4, 21, seed=1)
    got = jax.jit(lambda *a: _kernels(cell, *a, threads=0))(params, xs, h0, c0, w_d, b_d)
    if cell == "lstm":
        ys, h, c = ref.run_lstm(params, np.asarray(xs), h0, c0)
        loop, h_loop, c_loop = ref.lstm_closed_loop(params, w_d, b_d, xs[:, 0], h0, c0, 7)
        np.testing.assert_allclose(got["forward"][0][1], c, atol=2e-6, rtol=1e-5)
        np.testing.assert_allclose(got["closed loop"][0][1], c_loop, atol=4e-6, rtol=1e-5)
    else:
        ys, h = ref.run_gru(params, np.asarray(xs), h0)
        loop, h_loop = ref.gru_closed_loop(params, w_d, b_d, xs[:, 0], h0, 7)
    np.testing.assert_allclose(got["forward"][1], ys, atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(got["forward"][0][0], h, atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(np.swapaxes(got["forward time-major"][1], 0, 1), ys, atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(got["head"][1], ys @ np.asarray(w_d, np.float64) + np.asarray(b_d), atol=1e-5,
                               rtol=1e-5)
    np.testing.assert_allclose(got["closed loop"][1], loop, atol=4e-6, rtol=1e-5)
    np.testing.assert_allclose(got["closed loop"][0][0], h_loop, atol=2e-6, rtol=1e-5)


def _train(cell, params, xs, h0, c0, dys, threads, keep_gates=False):
    """Training's forward kernel then the backward kernel (the final carry's gradient: the initial carry's values):
    weight, initial-carry and input gradients."""
    xs_TB = jnp.swapaxes(xs, 0, 1)
    if cell == "lstm":
        k, weights, carry = native.LSTM, (params["w_x"], params["w_h"], params["b"], None), (h0, c0)
    else:
        k, weights, carry = native.GRU, (params["w_x"], params["w_h"], params["b_x"], params["b_h"]), (h0,)
    _, ys, kept = native.layer_train(k, weights, carry, xs_TB, threads=threads, keep_gates=keep_gates)
    return native.layer_backward(k, weights, carry, xs_TB, kept, dys, carry, threads=threads)


@pytest.mark.parametrize("cell, keep_gates", [("lstm", False), ("lstm", True), ("gru", False)])
@pytest.mark.parametrize("b", [27, 200])  # 5 chunks of 6 (by units where the LSTM recomputes), 17 of 12
def test_backward_split_by_rows_matches_float64_numpy_and_the_split_by_units(cell, keep_gates, b):
    """The backward pass by rows adds each thread's weight gradients in a buffer of its own, eight steps of a
    chunk at a time: other float32 roundings than by units, the same numbers to tolerance."""
    params, xs, h0, c0, _, _ = _arrays(cell, b, 11, 4, 21, seed=2)
    dys = jnp.asarray(np.random.default_rng(9).normal(size=(b, 11, 21)), jnp.float32)
    args = (params, xs, h0, c0, dys)
    split, by_units = (jax.jit(lambda *a, n=n: _train(cell, *a, threads=n, keep_gates=keep_gates))(*args)
                       for n in (0, 1))
    if cell == "lstm":
        g, dh0, dc0, dxs = ref.lstm_backward(params, np.asarray(xs), h0, c0, dys, h0, c0)
        want = ((g["w_x"], g["w_h"], g["b"]), (dh0, dc0), dxs)
    else:
        g, dh0, dxs = ref.gru_backward(params, np.asarray(xs), h0, dys, h0)
        want = ((g["w_x"], g["w_h"], g["b_x"], g["b_h"]), (dh0,), dxs)
    grads, d_carry, dxs_k = split
    got = (tuple(x for x in grads if x is not None), d_carry, jnp.swapaxes(dxs_k, 0, 1))
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(x, y, atol=2e-5 * max(1.0, np.abs(y).max()), rtol=1e-4)
    for x, y in zip(jax.tree.leaves(split), jax.tree.leaves(by_units)):
        np.testing.assert_allclose(x, y, atol=1e-5 * max(1.0, np.abs(y).max()), rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_calls_from_several_threads_at_once_give_each_its_own_results(cell):
    """The kernels' worker threads serve one call at a time: a call that finds them busy waits for them. Four Python
    threads calling at once, each with its own inputs, must each get the bits a call alone gives, and none may
    hang."""
    fn = jax.jit(lambda *a: _kernels(cell, *a, threads=0))
    inputs = [_arrays(cell, 27, 40, 3, 37, seed=s) for s in range(4)]  # calls long enough to overlap
    alone = [jax.device_get(fn(*args)) for args in inputs]
    got, errors, start = [None] * 4, [], threading.Barrier(4)

    def call(i):
        try:
            start.wait()
            for _ in range(3):
                got[i] = jax.device_get(fn(*inputs[i]))
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a call from one of the threads never returned"
    assert not errors, errors
    for i in range(4):
        jax.tree.map(np.testing.assert_array_equal, got[i], alone[i])
