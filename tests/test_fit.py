"""`fit`: a small model beats persistence on a noisy sine (stateless and stateful), interrupted runs resume
bit for bit, early stopping, the JSON-lines history, padding of the last batch, and argument errors."""

import json

import jax
import numpy as np
import optax
import pytest

import seqjax as sj
import seqjax.train as tr
from seqjax import data, losses
from seqjax.train import stateful as stateful_module
from seqjax.train import step as step_module


def noisy_sine(length=1400, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    return (np.sin(2 * np.pi * t / 20) + 0.1 * rng.standard_normal(length)).astype(np.float32)[:, None]


@pytest.fixture(scope="module")
def series():
    return noisy_sine()


def test_stateless_fit_beats_persistence_on_a_noisy_sine(series):
    train_x, train_y = data.next_step_pairs(data.windows(series[:1100], 21, stride=3))
    val_x, val_y = data.next_step_pairs(data.windows(series[1100:], 21, stride=3))
    model = sj.chain(sj.lstm(8), sj.dense(1))
    result = tr.fit(tr.objective(model, losses.mse), optax.adam(2e-2), model.init(jax.random.key(0), 1),
                    (train_x, train_y), epochs=6, batch_size=32, val=(val_x, val_y), progress=False)
    persistence = np.mean((val_x.astype(np.float64) - val_y) ** 2)  # predict "the same as now"
    _, pred = sj.scan(model, result.state.params, model.initial_carry(len(val_x)), val_x)
    model_mse = np.mean((np.asarray(pred, np.float64) - val_y) ** 2)
    assert model_mse < 0.6 * persistence
    np.testing.assert_allclose(result.history[-1]["val_loss"], model_mse, rtol=1e-4)
    assert result.carry is None and not result.stopped_early
    assert [h["epoch"] for h in result.history] == list(range(6))
    assert result.history[-1]["step"] == 6 * int(np.ceil(len(train_x) / 32))


def test_stateful_fit_beats_persistence_and_returns_the_carry(series):
    train = data.stateful_pairs(series[:1100], 4, 25)
    val = data.stateful_pairs(series[1100:], 3, 25)
    model = sj.chain(sj.gru(8), sj.dense(1))
    obj, optimizer = tr.objective(model, losses.mse), optax.adam(2e-2)
    result = tr.fit(obj, optimizer, model.init(jax.random.key(0), 1), train, epochs=8, val=val, progress=False)
    persistence = np.mean((val.xs.astype(np.float64) - val.ys) ** 2)
    assert result.history[-1]["val_loss"] < 0.6 * persistence
    assert result.history[-1]["step"] == 8 * train.xs.shape[0]
    # fit is epochs of make_stateful_epoch, each from a fresh carry; the carry is the last epoch's final one
    run_epoch = tr.make_stateful_epoch(obj, optimizer)  # the same objects: fit's compiled program
    state = tr.init_state(model.init(jax.random.key(0), 1), optimizer, key=jax.random.key(0))
    for _ in range(8):
        state, carry, _ = run_epoch(state, train)
    for a, b in zip(jax.tree.leaves((state.params, carry)), jax.tree.leaves((result.state.params, result.carry))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


class Interrupt(Exception):
    pass


def interrupt_after(monkeypatch, cls, calls):
    """Make the `calls + 1`-th call of `cls` raise, like a killed process between two compiled calls."""
    original = cls.__call__
    count = {"n": 0}

    def wrapped(self, *args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            raise Interrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", wrapped)


def strip_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def assert_bitwise(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_stateful_run_resumed_mid_epoch_equals_uninterrupted_run_bitwise(tmp_path, monkeypatch, series):
    train = data.stateful_pairs(series[:600], 3, 24)  # 8 chunks per epoch
    val = data.stateful_pairs(series[600:800], 2, 24)
    model = sj.chain(sj.simple_rnn(6, dropout=0.2, recurrent_dropout=0.1), sj.dense(1))  # the key must resume too
    params = model.init(jax.random.key(1), 1)
    obj, optimizer = tr.objective(model, losses.mse), optax.adam(1e-2)  # reused: compiled once for all runs

    def run(directory):
        return tr.fit(obj, optimizer, params, train, epochs=2, val=val, checkpoint_dir=directory,
                      checkpoint_every=4, history_path=directory / "history.jsonl", progress=False,
                      early_stopping=tr.EarlyStopping(patience=5))

    reference = run(tmp_path / "a")
    with monkeypatch.context() as m:
        # each epoch is two calls of 4 chunks; the 4th call (epoch 1, chunks 4-7) never happens
        interrupt_after(m, stateful_module.StatefulEpoch, 3)
        with pytest.raises(Interrupt):
            run(tmp_path / "b")
    saved = tr.Checkpointer(tmp_path / "b")
    assert saved.latest_step() == 8 + 4  # mid-epoch: epoch 0 and 4 chunks of epoch 1
    saved.close()
    resumed = run(tmp_path / "b")
    assert_bitwise(resumed.state.params, reference.state.params)
    assert_bitwise(resumed.carry, reference.carry)
    assert int(resumed.state.step) == int(reference.state.step) == 16
    assert strip_seconds(resumed.history) == strip_seconds(reference.history)
    lines = [json.loads(line) for line in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    assert strip_seconds(lines) == strip_seconds(reference.history)
    again = run(tmp_path / "b")  # a finished run resumes to its end at once
    assert_bitwise(again.state.params, reference.state.params)


def test_stateless_run_resumed_mid_epoch_equals_uninterrupted_run_bitwise(tmp_path, monkeypatch, series):
    x, y = data.next_step_pairs(data.windows(series[:400], 11, stride=4))  # 98 windows
    model = sj.chain(sj.simple_rnn(5), sj.dense(1))
    params = model.init(jax.random.key(2), 1)
    obj, optimizer = tr.objective(model, losses.mse), optax.adam(1e-2)

    def run(directory, epochs=2):
        return tr.fit(obj, optimizer, params, (x, y), epochs=epochs,
                      batch_size=16, seed=3, checkpoint_dir=directory, checkpoint_every=3, progress=False)

    reference = run(tmp_path / "a")
    with monkeypatch.context() as m:
        interrupt_after(m, step_module.TrainStep, 7 + 4)  # epoch 1 (7 batches each): 3 saved, 1 lost
        with pytest.raises(Interrupt):
            run(tmp_path / "b")
    resumed = run(tmp_path / "b")
    assert_bitwise(resumed.state.params, reference.state.params)
    assert_bitwise(resumed.state.opt_state, reference.state.opt_state)
    assert strip_seconds(resumed.history) == strip_seconds(reference.history)
    longer = run(tmp_path / "b", epochs=3)  # more epochs continue the same run
    assert len(longer.history) == 3 and longer.history[:2] == resumed.history
    with pytest.raises(ValueError, match="comes from another run"):
        tr.fit(obj, optimizer, params, (x, y), epochs=2, batch_size=8, checkpoint_dir=tmp_path / "b", progress=False)


def test_early_stopping_stops_and_restores_the_best_params(series):
    x, y = data.next_step_pairs(data.windows(series[:300], 11, stride=5))
    model = sj.chain(sj.simple_rnn(4), sj.dense(1))
    params = model.init(jax.random.key(3), 1)
    # "up" grows as training lowers the loss, so its best epoch is the first one
    obj = tr.objective(model, losses.mse, metrics={"up": lambda p, t, m: -losses.mse(p, t, m)})
    optimizer = optax.adam(2e-2)

    def run(epochs, early_stopping=None):
        return tr.fit(obj, optimizer, params, (x, y), epochs=epochs, batch_size=20, shuffle=False,
                      val=(x, y), early_stopping=early_stopping, progress=False)

    stopped = run(10, tr.EarlyStopping(patience=2, monitor="val_up"))
    assert stopped.stopped_early and len(stopped.history) == 3
    ups = [h["val_up"] for h in stopped.history]
    assert ups[0] < ups[1] < ups[2]
    first_epoch = run(1)
    assert_bitwise(stopped.state.params, first_epoch.state.params)  # the best epoch's params
    assert int(stopped.state.step) == 3 * first_epoch.history[0]["step"]  # the rest stays the last epoch's
    with pytest.raises(ValueError, match=r"early_stopping.monitor must be one of the history's keys .* got 'val_nope'"):
        run(2, tr.EarlyStopping(patience=1, monitor="val_nope"))


def test_last_batch_is_padded_and_masked_so_every_sample_counts_once():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(7, 3, 2)).astype(np.float32)  # 7 samples, batch 3: batches of 3, 3, 1 (+2 padding)
    y = rng.normal(size=(7, 3, 1)).astype(np.float32)
    model = sj.chain(sj.simple_rnn(4), sj.dense(1))
    params = model.init(jax.random.key(4), 2)
    obj = tr.objective(model, losses.mse)
    result = tr.fit(obj, optax.sgd(0.0), params, (x, y), epochs=1, batch_size=3, shuffle=False, val=(x, y),
                    progress=False)
    _, pred = sj.scan(model, params, model.initial_carry(7), x)
    per_sample = np.mean((np.asarray(pred, np.float64) - y) ** 2, axis=(1, 2))
    batch_losses = [per_sample[0:3].mean(), per_sample[3:6].mean(), per_sample[6:7].mean()]
    assert result.history[0]["step"] == 3
    np.testing.assert_allclose(result.history[0]["loss"], np.mean(batch_losses), rtol=1e-5)
    np.testing.assert_allclose(result.history[0]["val_loss"], per_sample.mean(), rtol=1e-5)  # weighted by rows


def test_nonfinite_steps_are_counted_and_history_has_no_nan():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 4, 1)).astype(np.float32)
    y = rng.normal(size=(6, 4, 1)).astype(np.float32)
    y[4, 1, 0] = np.nan  # one bad sample: its batch is skipped every epoch
    model = sj.chain(sj.simple_rnn(3), sj.dense(1))
    result = tr.fit(tr.objective(model, losses.mse), optax.adam(1e-2), model.init(jax.random.key(5), 1), (x, y),
                    epochs=2, batch_size=2, shuffle=False, val=(x, y), progress=False)
    assert [h["nonfinite"] for h in result.history] == [1, 1]
    assert all(np.isfinite(h["loss"]) for h in result.history)
    assert result.history[0]["val_loss"] is None  # NaN is written as null
    assert np.all(np.isfinite(jax.tree.leaves(result.state.params)[0]))


def test_progress_bar_goes_to_stderr(capsys):
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(4, 3, 1)).astype(np.float32), rng.normal(size=(4, 3, 1)).astype(np.float32)
    model = sj.chain(sj.simple_rnn(3), sj.dense(1))
    tr.fit(tr.objective(model, losses.mse), optax.sgd(0.1), model.init(jax.random.key(6), 1), (x, y), epochs=2,
           batch_size=2, progress=True)
    captured = capsys.readouterr()
    assert "epoch 2/2" in captured.err and "loss" in captured.err and captured.out == ""


def test_fit_rejects_inconsistent_arguments(series):
    model = sj.chain(sj.simple_rnn(3), sj.dense(1))
    params = model.init(jax.random.key(7), 1)
    obj = tr.objective(model, losses.mse)
    chunks = data.stateful_pairs(series[:200], 2, 10)
    x, y = data.next_step_pairs(data.windows(series[:100], 6))
    with pytest.raises(ValueError, match="batch_size must be None for stateful chunks"):
        tr.fit(obj, optax.sgd(0.1), params, chunks, epochs=1, batch_size=2)
    with pytest.raises(ValueError, match="shuffle must be None or False for stateful chunks"):
        tr.fit(obj, optax.sgd(0.1), params, chunks, epochs=1, shuffle=True)
    with pytest.raises(TypeError, match="val must be a seqjax.data.StatefulPairs like train"):
        tr.fit(obj, optax.sgd(0.1), params, chunks, epochs=1, val=(x, y))
    with pytest.raises(ValueError, match="batch_size must be an int >= 1; got None"):
        tr.fit(obj, optax.sgd(0.1), params, (x, y), epochs=1)
    with pytest.raises(ValueError, match="epochs must be an int >= 1; got 0"):
        tr.fit(obj, optax.sgd(0.1), params, (x, y), epochs=0, batch_size=4)
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint_dir"):
        tr.fit(obj, optax.sgd(0.1), params, (x, y), epochs=1, batch_size=4, checkpoint_every=2)
    with pytest.raises(TypeError, match="objective must be a seqjax.train.Objective; got a Cell"):
        tr.fit(model, optax.sgd(0.1), params, (x, y), epochs=1, batch_size=4)
