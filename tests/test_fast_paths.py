"""The fast paths (`seqjax.fast`) give the numbers of the reference loop over `step`, values and gradients.

The reference is the same cell without its fast path (`cell._replace(sequence=None)`), which `scan` runs
as `scan_steps`, plus the independent float64 NumPy loops of `reference.py`. Sizes are tiny and all
different (B=3, T=7, F=2, H=5) so a wrong axis cannot pass.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference as ref
import seqjax as sj
import seqjax.fast._common as fast_common
from seqjax.cells.chain import _heads
from seqjax.fast.plan import Plan, plan_for
from seqjax.fast.remat import check_remat

B, T, F, H = 3, 7, 2, 5
CELLS = {"lstm": sj.lstm, "gru": sj.gru, "simple_rnn": sj.simple_rnn}
# chunk=4 with T=7: one chunk of 4 and a ragged last chunk of 3; chunk=1 with recompute: each step's
# forward again right before its backward (and without: one-step chunks over every step's residuals)
PLANS = [Plan(), Plan(chunk=4), Plan(chunk=4, recompute=True), Plan(chunk=1, recompute=True), Plan(hoist=True),
         Plan(unroll=3), Plan(fuse_xh=True, chunk=2, recompute=True), Plan(custom_vjp=False),
         Plan(batch_major=False, chunk=3), Plan(chunk=1)]
# every plan on the LSTM, the ones that change what is kept or the loop body on the others
CASES = [("lstm", p) for p in PLANS] + [(n, p) for n in ("gru", "simple_rnn") for p in PLANS[:5]]


@pytest.fixture(autouse=True)
def _fast_plan(monkeypatch):
    """At these tiny sizes the plan may pick the reference loop (small GRU); the tests want the engine."""
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: Plan())


def _params(name, seed=0):
    return {k: jnp.asarray(v, jnp.float32) for k, v in ref.random_params(name, seed, F, H).items()}


def _data(seed=1, shape=(B, T, F)):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _carry(cell, seed=2):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(rng.normal(0, 0.5, a.shape), a.dtype), cell.initial_carry(B))


def _reference(cell):
    return cell._replace(sequence=None)


def _loss(cell, params, carry, xs, **kw):
    """A loss that weights every output and the final carry differently, so every gradient matters."""
    new_carry, ys = sj.scan(cell, params, carry, xs, **kw)
    w = jnp.sin(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
    return jnp.sum(w * ys) + sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(new_carry))


def _outputs_and_grads(cell, params, carry, xs, **kw):
    """`(scan outputs, gradients of _loss wrt params, carry, xs)`, one compile."""

    @jax.jit
    def run(params, carry, xs):
        grads = jax.grad(lambda *a: _loss(cell, *a, **kw), argnums=(0, 1, 2))(params, carry, xs)
        return sj.scan(cell, params, carry, xs, **kw), grads

    return run(params, carry, xs)


def _assert_same(cell, params, carry, xs, atol=2e-5, **kw):
    out_f, g_f = _outputs_and_grads(cell, params, carry, xs, **kw)
    out_s, g_s = _outputs_and_grads(_reference(cell), params, carry, xs, **kw)
    assert type(out_f[0]) is type(out_s[0])
    for a, b in zip(jax.tree.leaves(out_f), jax.tree.leaves(out_s)):
        np.testing.assert_allclose(a, b, atol=atol, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_f), jax.tree.leaves(g_s)):
        np.testing.assert_allclose(a, b, atol=atol * 10, rtol=1e-4)
    return out_f


@pytest.mark.parametrize("name, plan", CASES, ids=str)
def test_fast_path_equals_reference_loop_values_and_gradients(name, plan, monkeypatch):
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: plan)
    cell = CELLS[name](H)
    assert cell.sequence is not None
    params, carry, xs = _params(name), _carry(cell), _data()
    (new_carry, ys) = _assert_same(cell, params, carry, xs)
    # and the independent float64 NumPy loop
    if name == "lstm":
        want_ys, want_h, want_c = ref.run_lstm(params, np.asarray(xs), carry.h, carry.c)
        np.testing.assert_allclose(new_carry.c, want_c, atol=1e-5)
    elif name == "gru":
        want_ys, want_h = ref.run_gru(params, np.asarray(xs), carry.h)
    else:
        want_ys, want_h = ref.run_simple_rnn(params, np.asarray(xs), carry.h)
    np.testing.assert_allclose(ys, want_ys, atol=1e-5)
    np.testing.assert_allclose(new_carry.h, want_h, atol=1e-5)


def test_custom_vjp_is_the_gradient_path(monkeypatch):
    """The default plan trains through the hand-written backward pass: its weight gradient is one matmul
    over all `T * B` rows of `dz` (`[21, 4H]`), which JAX's own scan transpose never forms."""
    assert plan_for(B, T, F, H, "lstm", backend="cpu").custom_vjp
    cell = sj.lstm(H)

    def grad_jaxpr():
        return str(jax.make_jaxpr(jax.grad(lambda p: _loss(cell, p, _carry(cell), _data())))(_params("lstm")))

    assert f"f32[{T * B},{4 * H}]" in grad_jaxpr()
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: Plan(custom_vjp=False))
    assert f"f32[{T * B},{4 * H}]" not in grad_jaxpr()


@pytest.mark.parametrize("name", sorted(CELLS))
def test_reverse_and_chunks_with_carry_passed_on(name):
    cell = CELLS[name](H)
    params, carry, xs = _params(name), _carry(cell), _data()
    _assert_same(cell, params, carry, xs, reverse=True)
    c1, y1 = sj.scan(cell, params, carry, xs[:, :3])
    c2, y2 = sj.scan(cell, params, c1, xs[:, 3:])
    c_all, y_all = sj.scan(_reference(cell), params, carry, xs)
    np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), y_all, atol=2e-5)
    for a, b in zip(jax.tree.leaves(c2), jax.tree.leaves(c_all)):
        np.testing.assert_allclose(a, b, atol=2e-5)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_mask_and_reset_hand_over_to_the_reference_loop(name):
    cell = CELLS[name](H)
    params, carry, xs = _params(name), _carry(cell), _data()
    rng = np.random.default_rng(3)
    mask = jnp.asarray(rng.random((B, T)) < 0.7)
    reset = jnp.asarray(rng.random((B, T)) < 0.2)
    _assert_same(cell, params, carry, xs, mask=mask)
    _assert_same(cell, params, carry, xs, mask=mask, reset=reset, masked_output="zero")


@pytest.mark.parametrize("name, rates", [("lstm", (0.3, 0.0)), ("lstm", (0.0, 0.4)), ("gru", (0.3, 0.4)),
                                         ("simple_rnn", (0.3, 0.0))])
def test_dropout_noise_matches_the_reference(name, rates):
    cell = CELLS[name](H, dropout=rates[0], recurrent_dropout=rates[1])
    params, carry, xs = _params(name), _carry(cell), _data()
    key = jax.random.key(7)
    ys_on = _assert_same(cell, params, carry, xs, key=key)[1]
    ys_off = sj.scan(cell, params, carry, xs)[1]
    assert not np.allclose(ys_on, ys_off)  # the noise really was applied


def test_non_default_maths_runs_the_reference():
    for cell, name in [(sj.lstm(H, recurrent_activation="hard_sigmoid"), "lstm"),
                       (sj.lstm(H, activation="relu"), "lstm"), (sj.gru(H, reset_after=False), "gru"),
                       (sj.simple_rnn(H, activation="relu"), "simple_rnn")]:
        params, carry, xs = _params(name), _carry(cell), _data()
        _assert_same(cell, params, carry, xs)


def test_mixed_dtypes_run_the_reference():
    cell = sj.lstm(H)
    params = _params("lstm")
    carry = jax.tree.map(lambda a: a.astype(jnp.bfloat16), _carry(cell))
    out_f = sj.scan(cell, params, carry, _data())
    out_s = sj.scan(_reference(cell), params, carry, _data())
    assert out_f[0].h.dtype == jnp.bfloat16
    for a, b in zip(jax.tree.leaves(out_f), jax.tree.leaves(out_s)):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_chain_of_fast_layers_and_head_matches_reference_parts():
    parts = [sj.lstm(H), sj.gru(4), sj.simple_rnn(6), sj.dense(2)]
    fast = sj.chain(*parts)
    slow = sj.chain(*[p._replace(sequence=None) if p.name != "dense" else p for p in parts])
    params = fast.init(jax.random.key(0), F)
    carry = jax.tree.map(lambda a: a + 0.3, fast.initial_carry(B))
    xs = _data()
    out_f, g_f = _outputs_and_grads(fast, params, carry, xs)
    out_s, g_s = _outputs_and_grads(slow, params, carry, xs)
    for a, b in zip(jax.tree.leaves(out_f), jax.tree.leaves(out_s)):
        np.testing.assert_allclose(a, b, atol=2e-5)
    for a, b in zip(jax.tree.leaves(g_f), jax.tree.leaves(g_s)):
        np.testing.assert_allclose(a, b, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_one_input_feature_keeps_the_input_projection_a_matmul(name):
    """With one input feature XLA would rewrite `x_t @ w_x` as a broadcast multiply, which XLA:CPU fuses
    into slow loop code (a GRU forward 2.2-2.8x slower than with two features): the loops, fast and reference
    (mask; input and recurrent dropout), multiply `[B, 2] @ [2, nH]` with an empty second feature, and
    give the reference step's values and gradients."""
    cell = CELLS[name](H)
    dropped = CELLS[name](H, dropout=0.4, recurrent_dropout=0.3)
    params = cell.init(jax.random.key(0), 1)
    carry = _carry(cell)
    xs = _data(shape=(B, T, 1))
    _assert_same(cell, params, carry, xs)
    _assert_same(cell, params, carry, xs, mask=_mask())
    _assert_same(dropped, params, carry, xs, key=jax.random.key(5))
    for model, kw in ((cell, {}), (cell, {"mask": _mask()}), (dropped, {"key": jax.random.key(5)})):
        text = jax.jit(lambda p, x: sj.scan(model, p, carry, x, **kw)[1]).lower(params, xs).as_text()
        assert re.search(rf"dot_general.*tensor<{B}x2xf32>, tensor<2x", text), (name, kw)


HEAD_CASES = [(n, p) for n in sorted(CELLS) for p in (Plan(), Plan(chunk=4, recompute=True))] + [
    ("lstm", p) for p in (Plan(chunk=1, recompute=True), Plan(custom_vjp=False), Plan(batch_major=False, chunk=3))]


@pytest.mark.parametrize("name, plan", HEAD_CASES, ids=str)
def test_chain_hands_its_stateless_parts_to_the_recurrent_layer_before_them(name, plan, monkeypatch):
    """`dense` and `activation` parts after a recurrent layer run as its head (inside the loop when
    evaluated, over all steps in the backward pass): values and gradients are those of the reference loop
    over `chain.step`, with two heads, a head feeding the next recurrent layer, and with a mask (layer by
    layer then)."""
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: plan)
    parts = (CELLS[name](H), sj.dense(4), sj.activation("tanh"), sj.lstm(3), sj.dense(F))
    assert sorted(_heads(parts)) == [0, 3]
    model = sj.chain(*parts)
    params = model.init(jax.random.key(0), F)
    carry = _carry(model)
    new_carry, ys = _assert_same(model, params, carry, _data())
    assert ys.shape == (B, T, F) and new_carry[1] == () and new_carry[2] == ()
    _assert_same(model, params, carry, _data(), mask=_mask())


@pytest.mark.parametrize("name", sorted(CELLS))
def test_chain_inference_does_not_write_the_recurrent_outputs(name, monkeypatch):
    """Evaluated, `chain(rnn(H), dense(F))` writes only the `[T, B, F]` head outputs: its temporaries stay
    below half a `[T, B, H]` array (0.18-0.35; layer by layer they held the outputs and a transposed copy
    of them: 2.0)."""
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: Plan(chunk=1, recompute=True, fuse_xh=True))
    b, t, f, h = 5, 120, 3, 24
    model = sj.chain(CELLS[name](h), sj.dense(f))
    params = model.init(jax.random.key(0), f)
    xs = _data(shape=(b, t, f))
    run = jax.jit(lambda p, xs: sj.scan(model, p, model.initial_carry(b), xs))
    temp = run.lower(params, xs).compile().memory_analysis().temp_size_in_bytes
    assert temp < 4 * b * t * h / 2, temp / (4 * b * t * h)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_input_dropout_on_the_reference_plan_is_applied_once(name, monkeypatch):
    """Where the plan hands over to the reference loop (small GRUs), the inputs reach it unmasked: the
    reference step applies the dropout mask itself (it was applied twice before)."""
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: Plan(use_reference=True))
    cell = CELLS[name](H, dropout=0.4)
    params, carry, xs = _params(name), _carry(cell), _data()
    ys_on = _assert_same(cell, params, carry, xs, key=jax.random.key(5))[1]
    assert not np.allclose(ys_on, sj.scan(cell, params, carry, xs)[1])  # the mask really was applied


def test_vmap_over_a_leading_axis_of_data_and_its_gradient():
    cell = sj.lstm(H)
    params, carry = _params("lstm"), _carry(cell)
    xs_N = _data(shape=(2, B, T, F))

    def batched(cell):
        value_and_grad = jax.value_and_grad(lambda p, xs: _loss(cell, p, carry, xs))
        return jax.jit(jax.vmap(value_and_grad, in_axes=(None, 0)))(params, xs_N)

    (loss_f, g_f), (loss_s, g_s) = batched(cell), batched(_reference(cell))
    assert loss_f.shape == (2,) and not np.allclose(loss_f[0], loss_f[1])
    np.testing.assert_allclose(loss_f, loss_s, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_f), jax.tree.leaves(g_s)):
        np.testing.assert_allclose(a, b, atol=2e-4, rtol=1e-4)


def _mask():
    return jnp.asarray(np.random.default_rng(4).random((B, T)) < 0.6).at[:, :4].set(False)


@pytest.mark.parametrize("chunk, model, kw", [
    (3, sj.chain(sj.lstm(H), sj.gru(4), sj.dense(2)), {}),  # 7 = 2 chunks of 3 + 1
    (3, sj.chain(sj.lstm(H), sj.dense(2)), {"mask": _mask(), "reverse": True, "reset": ~_mask()}),
    (50, sj.lstm(H), {"mask": _mask()}),  # a chunk longer than the sequence
], ids=["stack", "mask-reverse-reset", "chunk>T"])
def test_remat_gives_the_same_values_and_gradients(chunk, model, kw):
    params = model.init(jax.random.key(1), F)
    carry = jax.tree.map(lambda a: a + 0.2, model.initial_carry(B))
    xs = _data()
    plain, g_p = _outputs_and_grads(model, params, carry, xs, **kw)
    chunked, g_r = _outputs_and_grads(model, params, carry, xs, remat=chunk, **kw)
    for a, b in zip(jax.tree.leaves(chunked), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for a, b in zip(jax.tree.leaves(g_r), jax.tree.leaves(g_p)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_remat_bounds_the_memory_of_a_long_train_step():
    model = sj.chain(sj.lstm(16), sj.dense(2))
    params = model.init(jax.random.key(0), 2)
    xs = _data(shape=(4, 600, 2))

    def temp_bytes(remat):
        grad = jax.jit(jax.grad(lambda p: jnp.mean(sj.scan(model, p, model.initial_carry(4), xs, remat=remat)[1])))
        return grad.lower(params).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes(25) < 0.3 * temp_bytes(None)


def test_remat_errors_name_the_argument():
    cell = sj.lstm(H)
    params, carry, xs = _params("lstm"), cell.initial_carry(B), _data()
    for bad in (0, -2, 1.5, True, "4"):
        with pytest.raises(ValueError, match=r"sj.scan: remat must be None or an int >= 1 .*got"):
            sj.scan(cell, params, carry, xs, remat=bad)
    assert check_remat(None, "w") is None and check_remat(4, "w") == 4
    bi = sj.bidirectional(sj.lstm(H), sj.lstm(H))
    with pytest.raises(ValueError, match="sj.scan: remat needs a cell that runs step by step; got 'bidirectional'"):
        sj.scan(bi, bi.init(jax.random.key(0), F), bi.initial_carry(B), xs, remat=3)


def test_plan_keeps_residuals_while_small_and_recomputes_past_the_memory_budget():
    from seqjax.fast import plan as plan_module

    medium = plan_module.plan_for(64, 100, 8, 128, "lstm", backend="cpu", huge=False)
    very_long = plan_module.plan_for(8, 10_000, 8, 256, "lstm", backend="cpu", huge=False)
    assert medium.custom_vjp and not medium.recompute and medium.chunk == 10
    assert very_long.recompute and 2 <= very_long.chunk <= 100
    # past ~32 MB of kept arrays (the large config: ~210 MB) each chunk's forward pass is recomputed
    assert plan_module.plan_for(128, 200, 32, 256, "lstm", backend="cpu", huge=False).recompute
    assert plan_module.plan_for(32, 50, 2, 32, "gru", backend="cpu", huge=False).use_reference
    # recomputing with a batch of 64 or more: chunks of one step (LSTM and GRU, where it was measured)
    for cell in ("lstm", "gru"):
        for batch, time, hidden in ((128, 200, 256), (1024, 50, 128), (64, 400, 256)):
            plan = plan_module.plan_for(batch, time, 8, hidden, cell, backend="cpu", huge=False)
            assert plan.recompute and plan.chunk == 1, (cell, batch, plan)
        assert plan_module.plan_for(16, 2000, 8, 128, cell, backend="cpu", huge=False).chunk == 45  # long
    assert plan_module.plan_for(1024, 50, 8, 128, "simple_rnn", backend="cpu", huge=False).chunk > 1
    # and not where the carries every step would keep pass the budget (T = 10,000, B = 64: 655 MB of `c`)
    assert plan_module.plan_for(64, 10_000, 8, 256, "lstm", backend="cpu", huge=False).chunk > 1
    assert plan_module.plan_for(64, 100, 8, 128, "gru", backend="gpu").hoist  # unmeasured GPU choice


def test_plan_splits_the_step_matmul_only_in_the_slow_window_it_was_measured_in():
    """One `[x_t, h]` matmul per step, but two where XLA:CPU's `[B, F + H] @ [F + H, 512]` measured slow
    (129-160 rows; LSTM with H 128 and 1-32 features) from a batch of 256 (the many config: 1.1x faster
    forward)."""
    from seqjax.fast import plan as plan_module

    def fused(batch, time, features, hidden, cell="lstm", huge=False):
        plan = plan_module.plan_for(batch, time, features, hidden, cell, backend="cpu", huge=huge)
        assert plan.fuse_xh == plan_module.fuse_xh(batch, features, hidden, cell)
        return plan.fuse_xh

    for batch, time, features in ((1024, 50, 8), (256, 50, 32), (512, 100, 16), (256, 4, 8), (300, 50, 1)):
        assert not fused(batch, time, features, 128), (batch, time, features)
    assert not fused(1024, 50, 8, 128, huge=True)
    # outside the window: B 128, H 64 / 96 / 256, 176 or 192 rows (F 48, 64), SimpleRNN (128 columns)
    for batch, features, hidden, cell in ((128, 8, 128, "lstm"), (64, 8, 128, "lstm"), (1024, 8, 64, "lstm"),
                                          (1024, 8, 96, "lstm"), (128, 32, 256, "lstm"), (1024, 48, 128, "lstm"),
                                          (1024, 64, 128, "lstm"), (1024, 8, 128, "simple_rnn")):
        assert fused(batch, 50, features, hidden, cell), (batch, features, hidden, cell)


@pytest.mark.parametrize("name, fuse_xh", [("lstm", True), ("lstm", False), ("gru", False)])
def test_one_step_chunks_keep_no_second_copy_of_the_outputs(name, fuse_xh, monkeypatch):
    """One-step chunks read each step's starting `h` from the outputs inside the backward loop: the
    gradient's temporaries hold the outputs, the carried `c` (LSTM) and the outputs' gradient, not also a
    shifted copy of the outputs (as they did with the chunk starts sliced out before the loop: 26 MB more
    per large train step). Larger sizes than elsewhere, so the `[T, B, H]` arrays dominate."""
    from seqjax.fast.plan import CARRIED

    plan = Plan(chunk=1, recompute=True, fuse_xh=fuse_xh)
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: plan)
    b, t, f, h = 5, 120, 3, 24
    model = sj.chain(CELLS[name](h), sj.dense(f))
    params = model.init(jax.random.key(0), f)
    xs = _data(shape=(b, t, f))

    def loss(p):
        return jnp.sum(sj.scan(model, p, model.initial_carry(b), xs)[1] ** 2)

    temp = jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis().temp_size_in_bytes
    outputs = 4 * b * t * h
    assert temp < (CARRIED[name] + 3) * outputs, (temp / outputs, name)


def test_plan_with_huge_pages_keeps_residuals_up_to_the_larger_budget():
    from seqjax.fast import plan as plan_module

    for cell, batch, time, hidden in (("lstm", 128, 200, 256), ("gru", 1024, 50, 128), ("lstm", 16, 2000, 128)):
        plan = plan_module.plan_for(batch, time, 8, hidden, cell, backend="cpu", huge=True)
        recomputing = plan_module.plan_for(batch, time, 8, hidden, cell, backend="cpu", huge=False)
        assert plan.custom_vjp and not plan.recompute and recomputing.recompute, (cell, plan)
        assert plan.chunk <= round(time ** 0.5)
        assert recomputing.chunk == (1 if batch >= 64 else plan.chunk)  # one-step chunks from a batch of 64
    assert plan_module.plan_for(1024, 50, 8, 128, "lstm", backend="cpu", huge=True).chunk == 2  # wide batch
    # T = 10,000, H = 256: ~650 MB of residuals, past the budget: recomputed, as without huge pages
    assert plan_module.plan_for(8, 10_000, 8, 256, "lstm", backend="cpu", huge=True).recompute
    same = plan_module.plan_for(64, 100, 8, 128, "lstm", backend="cpu")
    assert plan_module.plan_for(64, 100, 8, 128, "lstm", backend="cpu", huge=True) == same


def test_huge_pages_reads_the_kernel_mode_and_glibc_tunables(tmp_path, monkeypatch):
    from seqjax.fast import plan as plan_module

    modes = {"always": "[always] madvise never\n", "madvise": "always [madvise] never\n",
             "never": "always madvise [never]\n"}
    for mode, text in modes.items():
        (tmp_path / mode).write_text(text)
        assert plan_module.thp_mode(str(tmp_path / mode)) == mode
    assert plan_module.thp_mode(str(tmp_path / "missing")) is None
    assert plan_module._glibc_hugetlb("glibc.malloc.check=0:glibc.malloc.hugetlb=1") == "1"
    assert plan_module._glibc_hugetlb("glibc.malloc.hugetlb=2") == "2"
    assert plan_module._glibc_hugetlb("glibc.malloc.mmap_max=0") is None
    (tmp_path / "on").write_text("Name:\tpython\nTHP_enabled:\t1\nThreads:\t3\n")
    (tmp_path / "off").write_text("Name:\tpython\nTHP_enabled:\t0\nThreads:\t3\n")
    (tmp_path / "old").write_text("Name:\tpython\nThreads:\t3\n")  # kernels before 5.0: no such line
    assert plan_module._thp_disabled_here(str(tmp_path / "off"))
    assert not any(plan_module._thp_disabled_here(str(tmp_path / n)) for n in ("on", "old", "missing"))

    def decide(mode, tunables, disabled=False):
        monkeypatch.setattr(plan_module, "thp_mode", lambda: mode)
        monkeypatch.setattr(plan_module, "_thp_disabled_here", lambda: disabled)
        monkeypatch.setenv("GLIBC_TUNABLES", tunables)
        plan_module.huge_pages.cache_clear()
        try:
            return plan_module.huge_pages()
        finally:
            plan_module.huge_pages.cache_clear()

    monkeypatch.setattr(plan_module.sys, "platform", "linux")
    assert decide("always", "")
    assert decide("madvise", "glibc.malloc.hugetlb=1")
    assert not decide("madvise", "")
    assert not decide("madvise", "glibc.malloc.hugetlb=0")
    assert not decide("never", "glibc.malloc.hugetlb=1")
    assert not decide(None, "")
    assert not decide("always", "", disabled=True)
    monkeypatch.setattr(plan_module.sys, "platform", "darwin")
    assert not decide("always", "")


@pytest.mark.parametrize("plan", [Plan(chunk=3), Plan(chunk=3, recompute=True)], ids=str)
def test_float64_runs_the_engine_with_float64_gradients(plan, monkeypatch):
    monkeypatch.setattr(fast_common, "plan_for", lambda *a, **k: plan)
    with jax.enable_x64(True):
        cell = sj.lstm(H, dtype=jnp.float64)
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), _params("lstm"))
        carry = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), _carry(cell))
        xs = jnp.asarray(_data(), jnp.float64)
        (out_f, g_f), (out_s, g_s) = (_outputs_and_grads(c, params, carry, xs) for c in (cell, _reference(cell)))
        assert out_f[1].dtype == jnp.float64 and g_f[0]["w_h"].dtype == jnp.float64
        for a, b in zip(jax.tree.leaves((out_f, g_f)), jax.tree.leaves((out_s, g_s))):
            np.testing.assert_allclose(a, b, atol=1e-12, rtol=1e-10)
