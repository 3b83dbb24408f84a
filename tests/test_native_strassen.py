"""The LSTM kernels' recurrent product by one level of Strassen's product (`strassen=True`; `Plan.native_strassen`).

The evaluation and closed-loop kernels with it are compared with the float64 NumPy LSTM of `reference.py` at sizes
that exercise how it splits the batch: pairs of 4-, 5- and 6-row blocks, one pair or two to a chunk, and an odd
batch whose last row takes the plain step. That it ran is shown by its bits differing from the plain kernel's;
where it does not apply (hidden sizes not a multiple of 32, batches too narrow for two chunks a thread) the
kernels give the plain kernel's bits.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import closed_loop_checks as checks
import reference as ref
import seqjax as sj
from seqjax.fast import native
from seqjax.fast import plan as plan_module


def _inputs(b, t, f, h, seed=0, head_scale=0.4):
    rng = np.random.default_rng(seed + 100)
    params = {k: jnp.asarray(v) for k, v in ref.random_params("lstm", seed, f, h).items()}
    xs = jnp.asarray(rng.normal(size=(t, b, f)), jnp.float32)  # time-major, as the kernels take them
    h0, c0 = (jnp.asarray(rng.normal(0, 0.5, (b, h)), jnp.float32) for _ in range(2))
    w_d, b_d = (jnp.asarray(rng.normal(0, head_scale, s), jnp.float32) for s in ((h, f), (f,)))
    return params, xs, h0, c0, w_d, b_d


def _check(got, plain, want, atol=1e-5):
    """Strassen's results `got` against the float64 `want`: within float32 tolerance (`atol` at these sizes and
    weights, whose pre-activations reach ~10), at most 4x the plain kernel's error (one level of Strassen's product
    measured ~2-2.7x: its sums round too), and not the plain kernel's bits (it ran)."""
    for g, p, w in zip(got, plain, want):
        g, p, w = (np.asarray(a, np.float64) for a in (g, p, w))
        np.testing.assert_allclose(g, w, atol=atol, rtol=1e-5)
        assert np.abs(g - w).max() <= max(4 * np.abs(p - w).max(), 1e-6)
    assert not all(np.array_equal(g, p) for g, p in zip(got, plain)), "Strassen's product did not run"


def _forward(params, xs, h0, c0, *, strassen, threads=0, batch_major=True, head=None):
    """`((h, c), ys)` of `lstm_forward` (or `lstm_forward_head` with `head = (w_d, b_d)`), ys `[B, T, ..]`."""
    args = (params["w_x"], params["w_h"], params["b"], h0, c0, xs)
    kwargs = {"batch_major": batch_major, "threads": threads, "strassen": strassen}
    carry, ys = (native.lstm_forward(*args, **kwargs) if head is None
                 else native.lstm_forward_head(*args, *head, **kwargs))
    return carry, (ys if batch_major else jnp.swapaxes(ys, 0, 1))


def _closed_loop(params, w_d, b_d, x0, h0, c0, steps, *, strassen, threads=0):
    return native.lstm_closed_loop(params["w_x"], params["w_h"], params["b"], h0, c0, x0, w_d, b_d, steps,
                                   threads=threads, strassen=strassen)


# B 50: pairs of 5 and 4 rows, one pair and two to a chunk; B 51: the same and a last row on the plain step;
# B 64, H 128: pairs of 4 rows, two to a chunk; B 48 on one thread: two chunks of two 6-row pairs
SIZES = [(50, 5, 3, 64, 0), (51, 4, 17, 32, 0), (64, 3, 8, 128, 0), (48, 6, 2, 96, 1)]


@pytest.mark.parametrize("b, t, f, h, threads", SIZES)
@pytest.mark.parametrize("batch_major", [True, False])
def test_forward_kernel_matches_float64_numpy(b, t, f, h, threads, batch_major):
    params, xs, h0, c0, _, _ = _inputs(b, t, f, h)
    run = jax.jit(lambda *a, strassen: _forward(*a, strassen=strassen, threads=threads, batch_major=batch_major),
                  static_argnames="strassen")
    (h_k, c_k), ys = run(params, xs, h0, c0, strassen=True)
    (h_p, c_p), ys_p = run(params, xs, h0, c0, strassen=False)
    ys_ref, h_ref, c_ref = ref.run_lstm(params, np.swapaxes(np.asarray(xs), 0, 1), h0, c0)
    _check((ys, h_k, c_k), (ys_p, h_p, c_p), (ys_ref, h_ref, c_ref))


@pytest.mark.parametrize("b, t, f, h, threads", SIZES[:2])
def test_forward_kernel_with_the_head_inside_matches_float64_numpy(b, t, f, h, threads):
    params, xs, h0, c0, w_d, b_d = _inputs(b, t, f, h, seed=1)
    (h_k, c_k), ys = _forward(params, xs, h0, c0, strassen=True, threads=threads, head=(w_d, b_d))
    (h_p, c_p), ys_p = _forward(params, xs, h0, c0, strassen=False, threads=threads, head=(w_d, b_d))
    hs, h_ref, c_ref = ref.run_lstm(params, np.swapaxes(np.asarray(xs), 0, 1), h0, c0)
    want = hs @ np.asarray(w_d, np.float64) + np.asarray(b_d, np.float64)
    _check((ys, h_k, c_k), (ys_p, h_p, c_p), (want, h_ref, c_ref))


@pytest.mark.parametrize("b, t, f, h, threads", SIZES)
def test_closed_loop_kernel_matches_float64_numpy(b, t, f, h, threads):
    # a head small enough that the fed-back loop does not amplify float32 rounding much in these 8 steps (c, which
    # adds up, the most: 1.6e-5 at H 128)
    params, xs, h0, c0, w_d, b_d = _inputs(b, t, f, h, seed=2, head_scale=0.1)
    steps = 8
    (h_k, c_k), ys = _closed_loop(params, w_d, b_d, xs[0], h0, c0, steps, strassen=True, threads=threads)
    (h_p, c_p), ys_p = _closed_loop(params, w_d, b_d, xs[0], h0, c0, steps, strassen=False, threads=threads)
    ys_ref, h_ref, c_ref = ref.lstm_closed_loop(params, w_d, b_d, xs[0], h0, c0, steps)
    assert ys.shape == (b, steps, f)
    _check((ys, h_k, c_k), (ys_p, h_p, c_p), (ys_ref, h_ref, c_ref), atol=3e-5)


def test_one_thread_and_all_give_the_same_bits():
    """The batch's split into chunks does not depend on the threads (B 64: four chunks, two a thread here)."""
    params, xs, h0, c0, w_d, b_d = _inputs(64, 4, 3, 96, seed=3)
    for run in (lambda n, s=True: _forward(params, xs, h0, c0, strassen=s, threads=n),
                lambda n, s=True: _closed_loop(params, w_d, b_d, xs[0], h0, c0, 9, strassen=s, threads=n)):
        jax.tree.map(np.testing.assert_array_equal, run(1), run(0))
        assert not np.array_equal(run(0)[1], run(0, s=False)[1])  # on both, Strassen's product ran


@pytest.mark.parametrize("b, h, threads", [(40, 48, 0), (40, 80, 1), (16, 64, 0), (24, 64, 1), (7, 32, 1)])
def test_where_it_does_not_apply_the_kernels_take_the_plain_step(b, h, threads):
    """H 48 and 80 are not a multiple of 32; B 16 makes one chunk (two 4-row pairs), fewer than two a thread;
    B 24 makes one chunk on one thread; B 7 not even one pair of 4-row blocks."""
    params, xs, h0, c0, w_d, b_d = _inputs(b, 3, 2, h, seed=4)
    for run in (lambda s: _forward(params, xs, h0, c0, strassen=s, threads=threads),
                lambda s: _closed_loop(params, w_d, b_d, xs[0], h0, c0, 5, strassen=s, threads=threads)):
        jax.tree.map(np.testing.assert_array_equal, run(True), run(False))


def test_the_plan_takes_it_for_the_lstm_from_128_units_unless_switched_off(monkeypatch):
    for b, h in ((64, 128), (128, 256), (1024, 128)):
        assert plan_module.plan_for(b, 200, 8, h, "lstm", backend="cpu").native_strassen
    assert not plan_module.plan_for(64, 200, 8, 64, "lstm", backend="cpu").native_strassen
    assert not plan_module.plan_for(32, 200, 2, 32, "lstm", backend="cpu").native_strassen
    assert not plan_module.plan_for(64, 200, 8, 128, "gru", backend="cpu").native_strassen
    monkeypatch.setenv("SEQJAX_STRASSEN", "0")
    assert not plan_module.plan_for(128, 200, 8, 256, "lstm", backend="cpu").native_strassen


def _strassen_attributes(fn, *args) -> dict:
    """{custom call target: its `strassen` attribute} of `jit(fn)(*args)`'s lowering."""
    text = jax.jit(fn).lower(*args).as_text()
    return {target: flag == "true" for target, flag in re.findall(r"custom_call @(\w+)\(.*?strassen = (\w+)", text)}


@pytest.mark.parametrize("h, on, switched_off", [(128, True, False), (64, False, False), (128, False, True)])
def test_scan_and_rollout_pass_the_plans_choice_and_equal_the_loop_over_step(h, on, switched_off, monkeypatch):
    """The README's forecast (`sj.scan` over a context, then `sj.rollout`) runs both kernels with the plan's
    choice (off with `SEQJAX_STRASSEN=0`), and its numbers are those of the same forecast stepping through
    `cell.step`."""
    if switched_off:
        monkeypatch.setenv("SEQJAX_STRASSEN", "0")
    model = sj.chain(sj.lstm(h), sj.dense(3))
    params = model.init(jax.random.key(1), 3)
    context = jax.random.normal(jax.random.key(2), (72, 6, 3))  # B 72: four chunks (pairs of 5 and 4 rows)

    def forecast(model, params, context):
        carry, ys = sj.scan(model, params, model.initial_carry(context.shape[0]), context)
        return sj.rollout(model, params, carry, ys[:, -1], 8)[1]

    assert _strassen_attributes(lambda p, c: forecast(model, p, c), params, context) == {
        native.TARGET_HEAD: on, native.TARGET_CLOSED_LOOP: on}
    want = jax.jit(lambda p, c: forecast(checks.by_steps(model), p, c))(params, context)
    np.testing.assert_allclose(jax.jit(lambda p, c: forecast(model, p, c))(params, context), want, atol=3e-6,
                               rtol=1e-5)
