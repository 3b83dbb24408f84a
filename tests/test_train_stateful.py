"""Stateful training: chunked forward passes equal one pass, truncated BPTT, resets, epochs, NaN, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import seqjax as sj
import seqjax.train as tr
from seqjax import data, losses

B, C, F, H = 3, 4, 2, 5  # streams, chunk length, features, hidden: all different
MODEL = sj.chain(sj.simple_rnn(H), sj.dense(F))
OBJ = tr.objective(MODEL, losses.mse)  # shared objects: each compiled program is built once per module
ADAM = optax.adam(1e-2)


@pytest.fixture(scope="module")
def setup():
    params = MODEL.init(jax.random.key(0), F)
    rng = np.random.default_rng(0)
    t = np.arange(70)
    series = np.stack([np.sin(t / 3.0), np.cos(t / 5.0)], axis=1) + 0.1 * rng.normal(size=(70, F))
    chunks = data.stateful_pairs(series.astype(np.float32), B, C)  # drop: 23 steps per stream -> 5 chunks
    return MODEL, params, chunks


def whole_streams(chunks_nBC):
    """[n, B, C, ...] chunks -> [B, n * C, ...]: each row's stream in order."""
    a = np.asarray(chunks_nBC)
    return np.swapaxes(a, 0, 1).reshape((a.shape[1], a.shape[0] * a.shape[2]) + a.shape[3:])


def test_chunked_forward_losses_equal_one_pass_over_the_whole_sequence(setup):
    _, _, chunks = setup
    model = sj.chain(sj.lstm(H), sj.dense(F))  # a two-field carry (h, c) inside a chain's tuple
    params = model.init(jax.random.key(1), F)
    n = chunks.xs.shape[0]
    obj = tr.objective(model, losses.mse, metrics={"mae": losses.mae})
    carry, metrics = tr.make_stateful_eval(obj)(params, chunks)
    full_carry, ys = sj.scan(model, params, model.initial_carry(B), whole_streams(chunks.xs))
    ys, targets = np.asarray(ys, np.float64), whole_streams(chunks.ys)
    for k in range(n):
        err = ys[:, k * C:(k + 1) * C] - targets[:, k * C:(k + 1) * C]
        np.testing.assert_allclose(metrics["loss"][k], np.mean(err ** 2), rtol=2e-5)
        np.testing.assert_allclose(metrics["mae"][k], np.mean(np.abs(err)), rtol=2e-5)
    for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(full_carry)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the carry returned after n - 1 chunks continues the sequence: the last chunk from it equals the pass's tail
    head, _ = tr.make_stateful_eval(obj)(params, tr.TrainBatch(*(a[:n - 1] for a in chunks)))
    _, tail = sj.scan(model, params, head, chunks.xs[n - 1])
    np.testing.assert_allclose(tail, ys[:, (n - 1) * C:], rtol=1e-5, atol=1e-6)


def test_padded_chunks_mask_the_tail_and_keep_the_carry(setup):
    model, params, _ = setup
    series = np.random.default_rng(1).normal(size=(30, F)).astype(np.float32)
    chunks = data.stateful_pairs(series, B, C, remainder="pad")  # streams of 10, 10, 9 steps: last chunk padded
    assert not chunks.mask.all()
    carry, metrics = tr.make_stateful_eval(tr.objective(model, losses.mse))(params, chunks)
    mask = whole_streams(chunks.mask)
    full_carry, ys = sj.scan(model, params, model.initial_carry(B), whole_streams(chunks.xs), mask=mask)
    err2 = (np.asarray(ys, np.float64) - whole_streams(chunks.ys)) ** 2
    for k in range(chunks.xs.shape[0]):
        m = mask[:, k * C:(k + 1) * C]
        np.testing.assert_allclose(metrics["loss"][k], err2[:, k * C:(k + 1) * C][m].mean(), rtol=2e-5)
    for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(full_carry)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_gradient_stops_at_the_chunk_boundary(setup):
    model, params, chunks = setup
    lr = 0.5
    step = tr.make_stateful_train_step(tr.objective(model, losses.mse), optax.sgd(lr), donate=False)
    state = tr.init_state(params, optax.sgd(lr))
    carry0, _ = sj.scan(model, params, model.initial_carry(B), chunks.xs[0])  # carry entering chunk 1
    _, carry1, _ = step(state, model.initial_carry(B), (chunks.xs[0], chunks.ys[0]))
    for a, b in zip(jax.tree.leaves(carry1), jax.tree.leaves(carry0)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    new_state, _, _ = step(state, carry0, (chunks.xs[1], chunks.ys[1]))

    def chunk_loss(p, carry):
        _, pred = sj.scan(model, p, carry, chunks.xs[1])
        return jnp.mean((pred - chunks.ys[1]) ** 2)

    truncated = jax.grad(chunk_loss)(params, carry0)  # the incoming carry is a constant

    def two_chunk_loss(p):  # full BPTT: the carry depends on p through chunk 0
        c, _ = sj.scan(model, p, model.initial_carry(B), chunks.xs[0])
        return chunk_loss(p, c)

    full = jax.grad(two_chunk_loss)(params)
    for new, old, g in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(params), jax.tree.leaves(truncated)):
        np.testing.assert_allclose((np.asarray(old) - np.asarray(new)) / lr, g, rtol=1e-4, atol=1e-6)
    w_trunc, w_full = truncated[0]["w_h"], full[0]["w_h"]
    assert not np.allclose(w_trunc, w_full, rtol=1e-3)  # the boundary matters for the recurrent weights


def test_epoch_is_a_scan_of_stateful_steps_from_a_fresh_carry(setup):
    model, params, chunks = setup
    optimizer, obj = ADAM, OBJ
    state, carry, metrics = tr.make_stateful_epoch(obj, optimizer)(tr.init_state(params, optimizer), chunks)
    assert metrics["loss"].shape == (chunks.xs.shape[0],) and int(state.step) == chunks.xs.shape[0]
    step = tr.make_stateful_train_step(obj, optimizer)
    s, c = tr.init_state(params, optimizer), model.initial_carry(B)
    for k in range(chunks.xs.shape[0]):
        s, c, m = step(s, c, tr.TrainBatch(chunks.xs[k], chunks.ys[k], chunks.mask[k], chunks.reset[k]))
        np.testing.assert_allclose(metrics["loss"][k], m["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves((state.params, carry)), jax.tree.leaves((s.params, c))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_per_sample_reset_replaces_only_those_rows(setup):
    model, params, chunks = setup
    evaluate = tr.make_stateful_eval(tr.objective(model, losses.mse), allow_recompile=True)
    two = tr.TrainBatch(chunks.xs[:2], chunks.ys[:2], None, np.array([[False] * B, [True, False, True]]))
    _, metrics = evaluate(params, two)
    carry, _ = sj.scan(model, params, model.initial_carry(B), chunks.xs[0])
    fresh = model.initial_carry(B)
    rows = np.array([True, False, True])
    mixed = jax.tree.map(lambda f, c: np.where(rows.reshape((B,) + (1,) * (c.ndim - 1)), f, c), fresh, carry)
    _, pred = sj.scan(model, params, mixed, chunks.xs[1])
    np.testing.assert_allclose(metrics["loss"][1], np.mean((np.asarray(pred, np.float64) - chunks.ys[1]) ** 2),
                               rtol=2e-5)
    # a chunk-level reset [n] (what stateful_pairs gives for parallel series) resets every row
    _, per_chunk = evaluate(params, tr.TrainBatch(chunks.xs[:2], chunks.ys[:2], None, np.array([False, True])))
    _, fresh_pred = sj.scan(model, params, fresh, chunks.xs[1])
    np.testing.assert_allclose(per_chunk["loss"][1],
                               np.mean((np.asarray(fresh_pred, np.float64) - chunks.ys[1]) ** 2), rtol=2e-5)


def test_nan_chunk_skip_and_raise(setup):
    model, params, chunks = setup
    optimizer, obj = ADAM, OBJ
    ys = chunks.ys.copy()
    ys[2, 1, 0, 0] = np.nan
    bad = chunks._replace(ys=ys)
    state, _, metrics = tr.make_stateful_epoch(obj, optimizer)(tr.init_state(params, optimizer), bad)
    assert metrics["nonfinite"].tolist() == [False, False, True, False, False]
    assert np.all(np.isfinite(jax.tree.leaves(state.params)[0]))

    step = tr.make_stateful_train_step(obj, optimizer)
    before, carry_before = tr.init_state(params, optimizer), model.initial_carry(B)
    for k in range(2):  # the state and carry entering chunk 2
        before, carry_before, _ = step(before, carry_before, tr.TrainBatch(*(a[k] for a in chunks)))
    with pytest.raises(tr.NonFiniteError, match="at chunk 2") as err:
        tr.make_stateful_epoch(obj, optimizer, on_nonfinite="raise")(tr.init_state(params, optimizer), bad)
    assert err.value.index == 2
    assert int(err.value.state.step) == 2
    for a, b in zip(jax.tree.leaves((err.value.state.params, err.value.carry)),
                    jax.tree.leaves((before.params, carry_before))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_carry_of_another_model_and_chunks_of_another_shape_are_refused(setup):
    model, params, chunks = setup
    optimizer, obj = ADAM, OBJ
    lstm_carry = sj.chain(sj.lstm(H), sj.dense(F)).initial_carry(B)
    step = tr.make_stateful_train_step(obj, optimizer)
    state = tr.init_state(params, optimizer)
    with pytest.raises(ValueError, match=r"carry must have the structure of chain's initial_carry\(3\).*a carry "
                                         r"from another model"):
        step(state, lstm_carry, (chunks.xs[0], chunks.ys[0]))
    with pytest.raises(ValueError, match=r"carry leaves must have the shapes of chain's initial_carry\(3\), e.g. "
                                         r"\(3, 5\); got \(2, 5\)"):
        step(state, model.initial_carry(2), (chunks.xs[0], chunks.ys[0]))
    with pytest.raises(ValueError, match="carry must have the structure"):
        tr.make_stateful_epoch(obj, optimizer)(state, chunks, lstm_carry)
    with pytest.raises(ValueError, match="carry must have the structure"):
        tr.make_stateful_eval(obj)(params, chunks, lstm_carry)
    state, carry, _ = step(state, model.initial_carry(B), (chunks.xs[0], chunks.ys[0]))
    with pytest.raises(ValueError, match=r"chunk.inputs must have shape \(3, 4, 2\).*got \(3, 3, 2\)"):
        step(state, carry, (chunks.xs[1][:, :3], chunks.ys[1][:, :3]))
    epoch = tr.make_stateful_epoch(obj, optimizer)
    state, _, _ = epoch(state, chunks)
    with pytest.raises(ValueError, match=r"chunks.inputs must have shape \(5, 3, 4, 2\).*got \(4, 3, 4, 2\)"):
        epoch(state, tr.TrainBatch(*(a[:4] for a in chunks)))
    with pytest.raises(TypeError, match="StatefulBatches, which has no targets"):
        epoch(state, data.stateful_batches(np.zeros((40, F), np.float32), B, C))
