"""orbax checkpoints: every optax state type round-trips as its own type, keys, carry, position, keep-last-N,
atomic directories, and clear errors for checkpoints that do not fit."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import seqjax as sj
import seqjax.train as tr
from seqjax import losses

PARAMS = {"w": np.arange(12, dtype=np.float32).reshape(3, 4) / 10, "b": np.ones(4, np.float32),
          "pair": (np.full(2, 0.5, np.float32), np.full((1, 1), 2.0, np.float32))}


def _label(p):
    return jax.tree.map(lambda x: "a" if np.ndim(x) > 1 else "b", p)


OPTIMIZERS = {
    "sgd": lambda: optax.sgd(0.1, momentum=0.9, nesterov=True),
    "adam": lambda: optax.adam(1e-2),
    "adamw": lambda: optax.adamw(1e-2),
    "amsgrad": lambda: optax.amsgrad(1e-2),
    "adagrad": lambda: optax.adagrad(1e-2),
    "rmsprop": lambda: optax.rmsprop(1e-2, centered=True, momentum=0.9),
    "adafactor": lambda: optax.adafactor(1e-2),
    "lion": lambda: optax.lion(1e-3),
    "lamb": lambda: optax.lamb(1e-2),
    "lars": lambda: optax.lars(1e-2),
    "novograd": lambda: optax.novograd(1e-2),
    "yogi": lambda: optax.yogi(1e-2),
    "radam": lambda: optax.radam(1e-2),
    "sm3": lambda: optax.sm3(1e-2),
    "fromage": lambda: optax.fromage(1e-2),
    "noisy_sgd": lambda: optax.noisy_sgd(1e-2, key=jax.random.key(5)),
    "adabelief": lambda: optax.adabelief(1e-2),
    "adamax": lambda: optax.adamax(1e-2),
    "nadam": lambda: optax.nadam(1e-2),
    "adadelta": lambda: optax.adadelta(1.0),
    "polyak_sgd": lambda: optax.polyak_sgd(),
    "lbfgs": lambda: optax.lbfgs(),
    "inject_hyperparams": lambda: optax.inject_hyperparams(optax.adam)(learning_rate=1e-2),
    "multi_steps": lambda: optax.MultiSteps(optax.adam(1e-2), every_k_schedule=3),
    "chain_clip_schedule": lambda: optax.chain(optax.clip_by_global_norm(1.0),
                                               optax.adam(optax.exponential_decay(1e-2, 10, 0.9))),
    "masked": lambda: optax.masked(optax.adam(1e-2), jax.tree.map(lambda x: np.ndim(x) > 1, PARAMS)),
    "multi_transform": lambda: optax.multi_transform({"a": optax.adam(1e-2), "b": optax.sgd(1e-2)}, _label(PARAMS)),
    "schedule_free": lambda: optax.contrib.schedule_free_adamw(1e-2),
    "ema": lambda: optax.chain(optax.adam(1e-2), optax.ema(0.9)),
    "apply_if_finite": lambda: optax.apply_if_finite(optax.adam(1e-2), 3),
    "keras_adam_amsgrad": lambda: tr.keras_adam(1e-2, amsgrad=True),
}


def _distinct(tree, seed: int):
    """`tree` with every array leaf filled with values of its own shape and dtype that differ from leaf to
    leaf (typed PRNG keys become other keys), so a slot restored into the wrong place cannot pass."""
    def fill(i, x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key(seed * 1000 + i)
        values = np.arange(np.size(x)).reshape(np.shape(x)) + 7 * i + seed
        if np.dtype(x.dtype) == np.bool_:
            return jnp.asarray(values % 2 == 1)
        return jnp.asarray((values * 0.25 if jnp.issubdtype(x.dtype, jnp.floating) else values).astype(x.dtype))

    leaves, treedef = jax.tree.flatten(tree)
    return jax.tree.unflatten(treedef, [fill(i, x) for i, x in enumerate(leaves)])


def _host(tree):
    return jax.tree.map(lambda x: np.array(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype,
                                                                                           jax.dtypes.prng_key) else x),
                        tree)


def assert_same(a, b, what=""):
    """Same tree structure (NamedTuple types included), same typed-key dtypes, bitwise-equal values."""
    assert jax.tree.structure(a) == jax.tree.structure(b), what
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert u.dtype == v.dtype, what
    for u, v in zip(jax.tree.leaves(_host(a)), jax.tree.leaves(_host(b))):
        np.testing.assert_array_equal(u, v, err_msg=what)


def test_every_optax_state_type_survives_the_round_trip(tmp_path):
    optimizers = {name: make() for name, make in OPTIMIZERS.items()}
    states = {name: _distinct(opt.init(PARAMS), seed) for seed, (name, opt) in enumerate(optimizers.items())}
    expected = _host(states)
    state = tr.TrainState(PARAMS, states, jnp.int32(2), jax.random.key(11))  # opt_state: all of them at once
    with tr.Checkpointer(tmp_path) as ckpt:
        assert ckpt.save(tr.Checkpoint(state)) == 2
    fresh = {name: optimizer.init(PARAMS) for name, optimizer in optimizers.items()}
    like = tr.Checkpoint(tr.TrainState(PARAMS, fresh, jnp.int32(0), jax.random.key(0)))
    with tr.Checkpointer(tmp_path) as ckpt:  # a new process would open the directory afresh
        restored = ckpt.restore(like).state.opt_state
    for name in optimizers:
        assert jax.tree.structure(restored[name]) == jax.tree.structure(fresh[name]), name
        assert_same(restored[name], states[name], name)
        for u, v in zip(jax.tree.leaves(_host(restored[name])), jax.tree.leaves(expected[name])):
            np.testing.assert_array_equal(u, v, err_msg=name)
    assert type(restored["adam"][0]) is optax.ScaleByAdamState
    assert type(restored["inject_hyperparams"]) is optax.InjectStatefulHyperparamsState


def test_carry_position_extra_meta_and_keys_round_trip(tmp_path):
    model = sj.chain(sj.lstm(5), sj.dense(3))
    params = model.init(jax.random.key(0), 3)
    optimizer = optax.adam(1e-2)
    state = tr.init_state(params, optimizer, key=jax.random.key(42, impl="rbg"))
    carry = jax.tree.map(lambda x: x + jnp.arange(x.size, dtype=x.dtype).reshape(x.shape), model.initial_carry(2))
    extra = {"best_params": jax.tree.map(lambda x: 2 * x, params)}
    saved = tr.Checkpoint(state, carry, tr.Position(3, 7), extra, {"history": [{"loss": 0.5}], "note": "x"})
    with tr.Checkpointer(tmp_path) as ckpt:
        ckpt.save(saved)
        like = tr.Checkpoint(tr.init_state(params, optimizer, key=jax.random.key(0, impl="rbg")),
                             model.initial_carry(2), extra={"best_params": params})
        restored = ckpt.restore(like)
    assert restored.position == tr.Position(3, 7)
    assert restored.meta == {"history": [{"loss": 0.5}], "note": "x"}
    assert_same(restored.state, state)
    assert_same(restored.carry, carry)
    assert type(restored.carry[0]) is sj.LSTMCarry
    assert_same(restored.extra, extra)
    assert jax.random.key_impl(restored.state.key) == jax.random.key_impl(state.key)
    old_style = tr.TrainState(params, optimizer.init(params), jnp.int32(9), jax.random.PRNGKey(3))  # raw uint32
    with tr.Checkpointer(tmp_path / "raw") as ckpt:
        ckpt.save(tr.Checkpoint(old_style))
        back = ckpt.restore(tr.Checkpoint(old_style._replace(key=jax.random.PRNGKey(0))))
    np.testing.assert_array_equal(back.state.key, jax.random.PRNGKey(3))


def test_a_restored_state_steps_exactly_like_the_original(tmp_path):
    model = sj.chain(sj.simple_rnn(4), sj.dense(2))
    params = model.init(jax.random.key(1), 3)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 6, 3)).astype(np.float32), rng.normal(size=(5, 6, 2)).astype(np.float32)
    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=3e-2)
    step = tr.make_train_step(tr.objective(model, losses.mse), optimizer, donate=False)
    state = tr.init_state(params, optimizer)
    for _ in range(3):
        state, _ = step(state, (x, y))
    with tr.Checkpointer(tmp_path) as ckpt:
        ckpt.save(tr.Checkpoint(state))
        restored = ckpt.restore(tr.Checkpoint(tr.init_state(params, optimizer))).state
    a, _ = step(state, (x, y))
    b, _ = step(restored, (x, y))  # same compiled program: the shape guard accepts the restored state
    assert_same(a, b)


def test_keeps_the_last_n_and_ignores_unfinished_saves(tmp_path):
    optimizer = optax.sgd(0.1)
    state = tr.init_state(PARAMS, optimizer)
    with tr.Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        for step in range(1, 6):
            ckpt.save(tr.Checkpoint(state._replace(step=jnp.int32(step))))
        assert ckpt.all_steps() == [4, 5]
        with pytest.raises(ValueError, match="step 5 is already saved"):
            ckpt.save(tr.Checkpoint(state._replace(step=jnp.int32(5))))
        with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 2 .* saved steps: \[4, 5\]"):
            ckpt.restore(tr.Checkpoint(state), step=2)
        assert int(ckpt.restore(tr.Checkpoint(state), step=4).state.step) == 4
    # a save killed before orbax's final rename leaves only a temporary directory: it is not a checkpoint
    partial = tmp_path / "9.orbax-checkpoint-tmp-1234"
    partial.mkdir()
    (partial / "junk").write_text("half written")
    with tr.Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        assert ckpt.latest_step() == 5
        assert int(ckpt.restore(tr.Checkpoint(state)).state.step) == 5
    assert not partial.exists()  # cleaned up when the directory is opened
    assert sorted(os.listdir(tmp_path)) == ["4", "5"]
    with tr.Checkpointer(tmp_path / "empty") as ckpt:
        with pytest.raises(FileNotFoundError, match="no checkpoint in"):
            ckpt.restore(tr.Checkpoint(state))


def test_checkpoint_of_another_model_optimizer_or_carry_is_refused_clearly(tmp_path):
    model = sj.chain(sj.lstm(5), sj.dense(3))
    params = model.init(jax.random.key(0), 3)
    optimizer = optax.adam(1e-2)
    with tr.Checkpointer(tmp_path) as ckpt:
        ckpt.save(tr.Checkpoint(tr.init_state(params, optimizer), model.initial_carry(2)))
        bigger = sj.chain(sj.lstm(6), sj.dense(3))
        like = tr.Checkpoint(tr.init_state(bigger.init(jax.random.key(0), 3), optimizer), bigger.initial_carry(2))
        with pytest.raises(ValueError, match=r"does not fit the target: .*state.params.0.w_h has shape \(5, 20\) "
                                             r"float32 in the checkpoint but \(6, 24\) float32 in the target.*another "
                                             r"model"):
            ckpt.restore(like)
        gru = sj.chain(sj.gru(5), sj.dense(3))
        like = tr.Checkpoint(tr.init_state(gru.init(jax.random.key(0), 3), optimizer), gru.initial_carry(2))
        with pytest.raises(ValueError, match=r"state.params.0.b_h is in the target \(shape \(15,\)\) but not in the "
                                             r"checkpoint"):
            ckpt.restore(like)
        with pytest.raises(ValueError, match=r"state.opt_state.0.mu.0.b is in the checkpoint .* but not in the target"):
            ckpt.restore(tr.Checkpoint(tr.init_state(params, optax.sgd(0.1)), model.initial_carry(2)))
        with pytest.raises(ValueError, match=r"carry.0.h is in the checkpoint \(shape \(2, 5\)\) but not in the "
                                             r"target"):
            ckpt.restore(tr.Checkpoint(tr.init_state(params, optimizer)))
        with pytest.raises(ValueError, match=r"carry.0.c has shape \(2, 5\) float32 in the checkpoint but \(4, 5\)"):
            ckpt.restore(tr.Checkpoint(tr.init_state(params, optimizer), model.initial_carry(4)))
        with pytest.raises(TypeError, match="like must be a Checkpoint"):
            ckpt.restore(tr.init_state(params, optimizer))
