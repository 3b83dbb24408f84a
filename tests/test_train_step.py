"""Compiled stateless steps: the update equals a hand-written optax step, NaN handling, shape guard,
dropout keys, any optax optimizer, and Keras's Adam."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import seqjax as sj
import seqjax.train as tr
from seqjax import data, losses

B, T, F, H, OUT = 4, 5, 3, 6, 2
MODEL = sj.chain(sj.lstm(H), sj.dense(OUT))
OBJ = tr.objective(MODEL, losses.mse)  # one objective and optimizer objects shared by the tests below,
ADAM, SGD = optax.adam(1e-2), optax.sgd(0.1)  # so their steps are compiled once for the whole module


@pytest.fixture(scope="module")
def setup():
    params = MODEL.init(jax.random.key(0), F)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, T, F)).astype(np.float32)
    y = rng.normal(size=(B, T, OUT)).astype(np.float32)
    return MODEL, params, x, y


def arrays(tree):
    """A host copy of every array (the step donates the state's buffers)."""
    return jax.tree.map(lambda a: np.array(a), tree)


def assert_tree_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_step_equals_hand_written_optax_step_with_clipping(setup):
    model, params, x, y = setup
    optimizer = optax.adam(1e-2)
    clip = 0.05

    def loss_fn(p):
        _, pred = sj.scan(model, p, model.initial_carry(B), x)
        return jnp.mean((pred - y) ** 2)

    p_ref, s_ref = params, optimizer.init(params)
    norms = []
    grad_fn, update = jax.jit(jax.grad(loss_fn)), jax.jit(optimizer.update)
    for _ in range(3):
        g = grad_fn(p_ref)
        norm = np.sqrt(sum(np.sum(np.asarray(leaf, np.float64) ** 2) for leaf in jax.tree.leaves(g)))
        norms.append(norm)
        g = jax.tree.map(lambda leaf: leaf * min(1.0, clip / norm), g)  # clip by global norm
        u, s_ref = update(g, s_ref, p_ref)
        p_ref = optax.apply_updates(p_ref, u)

    step = tr.make_train_step(tr.objective(model, losses.mse), optimizer, clip_norm=clip)
    state = tr.init_state(params, optimizer)
    for k in range(3):
        state, metrics = step(state, (x, y))
        np.testing.assert_allclose(metrics["grad_norm"], norms[k], rtol=1e-5)
        assert not metrics["nonfinite"]
    assert int(state.step) == 3
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(p_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert max(norms) > clip  # clipping was active


def test_training_lowers_the_loss_and_eval_reports_objective_metrics(setup):
    model, params, x, y = setup
    step = tr.make_train_step(OBJ, ADAM)
    evaluate = tr.make_eval_step(tr.objective(model, losses.mse, metrics={"mae": losses.mae}))
    state = tr.init_state(params, ADAM)
    before = evaluate(state.params, (x, y))
    _, pred = sj.scan(model, params, model.initial_carry(B), x)
    err = np.asarray(pred, np.float64) - y
    np.testing.assert_allclose(before["loss"], np.mean(err ** 2), rtol=1e-5)
    np.testing.assert_allclose(before["mae"], np.mean(np.abs(err)), rtol=1e-5)
    for _ in range(30):
        state, metrics = step(state, (x, y))
    assert sorted(metrics) == ["grad_norm", "loss", "nonfinite"]
    assert evaluate(state.params, (x, y))["loss"] < 0.8 * before["loss"]


def test_init_state_does_not_alias_the_callers_params(setup):
    model, params, x, y = setup
    kept = arrays(params)
    state = tr.init_state(params, SGD)
    state, _ = tr.make_train_step(OBJ, SGD)(state, (x, y))
    assert_tree_equal(params, kept)  # donation consumed the state's copies, not the caller's params
    assert not np.array_equal(state.params[1]["w"], kept[1]["w"])


@jax.custom_vjp
def _poison(x, flag):
    return x


def _poison_fwd(x, flag):
    return x, flag


def _poison_bwd(flag, g):
    return jnp.where(flag, jnp.nan, g), None


_poison.defvjp(_poison_fwd, _poison_bwd)


def poisoned_objective(model):
    """mse whose gradient is NaN (the loss stays finite) when a target exceeds 1e3."""

    def loss_fn(params, batch, key):
        _, pred = sj.scan(model, params, model.initial_carry(batch.inputs.shape[0]), batch.inputs)
        pred = _poison(pred, jnp.any(batch.targets > 1e3))
        return losses.mse(pred, jnp.minimum(batch.targets, 1.0)), {}

    return tr.stateless_objective(loss_fn)


def test_nan_gradient_leaves_params_and_optimizer_state_unchanged_and_is_reported(setup):
    model, params, x, y = setup
    step = tr.make_train_step(poisoned_objective(model), ADAM)
    state, _ = step(tr.init_state(params, ADAM), (x, y))
    before_params, before_opt = arrays(state.params), arrays(state.opt_state)
    y_bad = y.copy()
    y_bad[1, 2, 0] = 1e4
    state, metrics = step(state, (x, y_bad))
    assert bool(metrics["nonfinite"]) and np.isfinite(metrics["loss"]) and np.isnan(metrics["grad_norm"])
    assert_tree_equal(state.params, before_params)
    assert_tree_equal(state.opt_state, before_opt)
    assert int(state.step) == 2
    state, metrics = step(state, (x, y))  # a good batch is applied again
    assert not metrics["nonfinite"]
    assert not np.array_equal(state.params[0]["w_x"], before_params[0]["w_x"])


def test_nan_loss_is_skipped_and_raise_mode_raises_with_the_unchanged_state(setup):
    model, params, x, y = setup
    y_nan = y.copy()
    y_nan[0, 0, 1] = np.nan
    skip = tr.make_train_step(OBJ, ADAM)
    state = tr.init_state(params, ADAM)
    state, metrics = skip(state, (x, y_nan))
    assert bool(metrics["nonfinite"]) and np.isnan(metrics["loss"])
    assert_tree_equal(state.params, params)

    raising = tr.make_train_step(OBJ, ADAM, on_nonfinite="raise")
    with pytest.raises(tr.NonFiniteError, match="non-finite loss or gradient.*update was not applied") as err:
        raising(tr.init_state(params, ADAM), (x, y_nan))
    assert_tree_equal(err.value.state.params, params)
    assert bool(err.value.metrics["nonfinite"])


def test_batch_of_another_shape_or_state_of_another_model_is_refused(setup):
    model, params, x, y = setup
    optimizer = SGD
    step = tr.make_train_step(OBJ, optimizer)
    state, _ = step(tr.init_state(params, optimizer), (x, y))
    with pytest.raises(ValueError, match=r"batch.inputs must have shape \(4, 5, 3\) and dtype float32 as compiled "
                                         r"on the first call; got \(3, 5, 3\) float32 — a jitted step would "
                                         r"silently recompile"):
        step(state, (x[:3], y[:3]))
    with pytest.raises(ValueError, match=r"batch.inputs must have shape \(4, 5, 3\).*got \(4, 2, 3\)"):
        step(state, (x[:, :2], y[:, :2]))
    with pytest.raises(ValueError, match="batch must have the structure the step was compiled for"):
        step(state, (x, y, np.ones((B, T), bool)))
    other = sj.chain(sj.lstm(H + 1), sj.dense(OUT)).init(jax.random.key(1), F)
    with pytest.raises(ValueError, match=r"state.params.0.b must have shape \(24,\).*got \(28,\)"):
        step(tr.init_state(other, optimizer), (x, y))
    free = tr.make_train_step(OBJ, optimizer, allow_recompile=True)
    state = tr.init_state(params, optimizer)
    state, _ = free(state, (x, y))
    state, metrics = free(state, (x[:3, :2], y[:3, :2]))
    assert np.isfinite(metrics["loss"])


def test_the_guard_reads_jax_and_numpy_leaves_alike():
    # A jax array's shape and dtype are read directly, other leaves through np.shape and the canonical
    # dtype: both must give the same signature, or a step fed NumPy then jax arrays would be refused.
    from seqjax.train._guard import _dtype, signature

    tree = {"f32": jnp.ones((2, 3)), "f16": jnp.ones((4,), jnp.float16), "weak": jnp.asarray(1.0),
            "i32": jnp.arange(5), "key": jax.random.key(1), "raw_key": jax.random.PRNGKey(2),
            "bool": jnp.zeros((1, 2), bool)}
    treedef, sig = signature(tree)
    assert treedef == jax.tree.structure(tree)
    assert sig == tuple((np.shape(x), _dtype(x)) for x in jax.tree.leaves(tree))
    host = {k: v for k, v in tree.items() if k != "key"}
    as_numpy = jax.tree.map(np.asarray, host)
    as_numpy["weak"] = 1.0  # a Python float: float32 as jit sees it
    assert signature(as_numpy) == signature(host)
    assert signature({"x": np.ones((2, 3), np.float64)}) == signature({"x": jnp.ones((2, 3))})


def test_a_step_first_fed_numpy_accepts_jax_arrays_and_refuses_another_dtype(setup):
    model, params, x, y = setup
    step = tr.make_train_step(OBJ, SGD)
    state, _ = step(tr.init_state(params, SGD), (x, y))
    state, metrics = step(state, (jnp.asarray(x), jnp.asarray(y)))
    assert np.isfinite(metrics["loss"])
    with pytest.raises(ValueError, match=r"batch.inputs must have shape \(4, 5, 3\) and dtype float32 as compiled "
                                         r"on the first call; got \(4, 5, 3\) float16"):
        step(state, (jnp.asarray(x, jnp.float16), jnp.asarray(y)))


def test_bad_arguments_name_what_was_expected(setup):
    model, params, x, y = setup
    obj = tr.objective(model, losses.mse)
    with pytest.raises(TypeError, match=r"with a cell pass \(model, loss, optimizer\); got \(model, optimizer\) "
                                        r"— add the loss"):
        tr.make_train_step(model, optax.sgd(0.1))
    with pytest.raises(TypeError, match="optimizer must be an optax.GradientTransformation"):
        tr.make_train_step(obj, "adam")
    with pytest.raises(ValueError, match="clip_norm must be None or a number > 0"):
        tr.make_train_step(obj, optax.sgd(0.1), clip_norm=0)
    with pytest.raises(ValueError, match=r"on_nonfinite must be one of \['skip', 'raise'\]"):
        tr.make_train_step(obj, optax.sgd(0.1), on_nonfinite="ignore")
    step = tr.make_train_step(obj, optax.sgd(0.1))
    state = tr.init_state(params, optax.sgd(0.1))
    with pytest.raises(TypeError, match="state must be a seqjax.train.TrainState"):
        step(params, (x, y))
    with pytest.raises(ValueError, match=r"batch must be \(inputs, targets\[, mask\[, reset\]\]\); got a tuple of 1"):
        step(state, (x,))
    with pytest.raises(TypeError, match="batch.mask must be bool; got dtype float32"):
        step(state, (x, y, np.ones((B, T), np.float32)))
    per_sample = tr.stateless_objective(lambda p, b, k: (jnp.zeros(B), {}))
    with pytest.raises(ValueError, match="loss_fn must return a scalar loss; got shape"):
        tr.make_train_step(per_sample, optax.sgd(0.1))(state, (x, y))


def test_dropout_masks_come_from_fold_in_of_key_and_step():
    model = sj.chain(sj.lstm(H, dropout=0.4, recurrent_dropout=0.4), sj.dense(OUT))
    params = model.init(jax.random.key(2), F)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(B, T, F)).astype(np.float32), rng.normal(size=(B, T, OUT)).astype(np.float32)
    optimizer = optax.sgd(0.0)  # params stay put: only the masks change
    step = tr.make_train_step(tr.objective(model, losses.mse), optimizer, donate=False)
    key = jax.random.key(7)
    state = tr.init_state(params, optimizer, key=key)

    @jax.jit
    def manual_with_key(k):
        _, pred = sj.scan(model, params, model.initial_carry(B), x, key=k)
        return jnp.mean((pred - y) ** 2)

    def manual(k):
        if k is not None:
            return float(manual_with_key(k))
        _, pred = sj.scan(model, params, model.initial_carry(B), x)
        return float(jnp.mean((pred - y) ** 2))

    _, m0 = step(state, (x, y))
    _, m0_again = step(state, (x, y))
    _, m3 = step(state._replace(step=jnp.int32(3)), (x, y))
    np.testing.assert_allclose(m0["loss"], manual(jax.random.fold_in(key, 0)), rtol=1e-6)
    np.testing.assert_allclose(m3["loss"], manual(jax.random.fold_in(key, 3)), rtol=1e-6)
    assert float(m0["loss"]) == float(m0_again["loss"])
    assert float(m0["loss"]) != float(m3["loss"])
    no_dropout = tr.make_eval_step(tr.objective(model, losses.mse))(params, (x, y))["loss"]
    np.testing.assert_allclose(no_dropout, manual(None), rtol=1e-6)


OPTIMIZERS = {
    "sgd_nesterov": lambda: optax.sgd(0.05, momentum=0.9, nesterov=True),
    "adamw": lambda: optax.adamw(1e-1),
    "adafactor": lambda: optax.adafactor(1e-1),
    "noisy_sgd": lambda: optax.noisy_sgd(1e-2, key=jax.random.key(0)),  # a PRNG key inside the optimizer state
    "polyak_sgd": lambda: optax.polyak_sgd(max_learning_rate=0.1),  # needs the loss value
    "inject_hyperparams": lambda: optax.inject_hyperparams(optax.rmsprop)(learning_rate=1e-2),
    "multi_steps": lambda: optax.MultiSteps(optax.adam(1e-1), every_k_schedule=2),  # not a GradientTransformation
    "keras_adam": lambda: tr.keras_adam(0.1, 0.9, 0.999, None, 0.01, False),  # the seed's Adam(lr, ..., decay, amsgrad)
}


def _linear_objective():
    """A least-squares objective with a dict of params: cheap to compile, so every optimizer can be tried."""

    def loss_fn(params, batch, key):
        pred = batch.inputs @ params["w"] + params["b"]
        return losses.mse(pred, batch.targets), {}

    return tr.stateless_objective(loss_fn)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_any_optax_optimizer_trains(name):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(16, 3)).astype(np.float32)
    y = (x @ np.array([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0]]) + 0.5).astype(np.float32)
    params = {"w": rng.normal(size=(3, 2)).astype(np.float32), "b": np.full(2, 0.1, np.float32)}
    optimizer = OPTIMIZERS[name]()
    obj = _linear_objective()
    step = tr.make_train_step(obj, optimizer)
    state = tr.init_state(params, optimizer)
    losses_seen = []
    for _ in range(8):
        state, metrics = step(state, (x, y))
        losses_seen.append(float(metrics["loss"]))
        assert not metrics["nonfinite"]
    assert float(tr.make_eval_step(obj)(state.params, (x, y))["loss"]) < 0.9 * losses_seen[0]
    assert jax.tree.structure(state.opt_state) == jax.tree.structure(optimizer.init(params))


def keras_module():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    return keras


@pytest.mark.parametrize("decay, amsgrad", [(0.0, False), (0.01, True)])
def test_keras_adam_follows_keras(decay, amsgrad):
    keras = keras_module()
    rng = np.random.default_rng(3)
    p0 = rng.normal(size=(3, 4)).astype(np.float32)
    grads = [(rng.normal(size=(3, 4)) * 10.0 ** rng.integers(-4, 1)).astype(np.float32) for _ in range(12)]
    lr = 0.009
    schedule = keras.optimizers.schedules.InverseTimeDecay(lr, decay_steps=1, decay_rate=decay) if decay else lr
    k_opt = keras.optimizers.Adam(learning_rate=schedule, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=amsgrad)
    var = keras.Variable(p0)
    for g in grads:
        k_opt.apply([keras.ops.convert_to_tensor(g)], [var])
    optimizer = tr.keras_adam(lr, beta_1=0.9, beta_2=0.999, epsilon=None, decay=decay, amsgrad=amsgrad)
    p, s = jnp.asarray(p0), optimizer.init(jnp.asarray(p0))
    for g in grads:
        u, s = optimizer.update(jnp.asarray(g), s, p)
        p = optax.apply_updates(p, u)
    np.testing.assert_allclose(p, keras.ops.convert_to_numpy(var), rtol=1e-5, atol=1e-6)
    if not amsgrad:  # where optax.adam puts epsilon differs: the trajectories must differ measurably
        ref, rs = jnp.asarray(p0), optax.adam(lr, eps=1e-7).init(jnp.asarray(p0))
        for g in grads:
            u, rs = optax.adam(lr, eps=1e-7).update(jnp.asarray(g), rs, ref)
            ref = optax.apply_updates(ref, u)
        assert decay or not np.allclose(ref, p, rtol=1e-6, atol=1e-7)


def test_batches_from_seqjax_data_feed_the_step_and_their_padding_does_not_count(setup):
    model, params, x, y = setup
    evaluate = tr.make_eval_step(OBJ, allow_recompile=True)  # a [B] row mask, then a [B, T] step mask
    batches = list(data.batches(x, y, batch_size=3, remainder="pad"))  # rows 0-2, then row 3 + 2 padding rows
    assert batches[1].mask.tolist() == [True, False, False]
    _, pred = sj.scan(model, params, model.initial_carry(B), x)
    per_row = np.mean((np.asarray(pred, np.float64) - y) ** 2, axis=(1, 2))
    np.testing.assert_allclose(evaluate(params, batches[0])["loss"], per_row[:3].mean(), rtol=1e-5)
    np.testing.assert_allclose(evaluate(params, batches[1])["loss"], per_row[3], rtol=1e-5)
    step_mask = np.ones((B, T), bool)
    step_mask[3, 2:] = False  # (inputs, targets, step_mask) batches combine both masks
    last = list(data.batches(x, y, step_mask, batch_size=3, remainder="pad"))[1]
    valid = (np.asarray(pred, np.float64)[3, :2] - y[3, :2]) ** 2
    np.testing.assert_allclose(evaluate(params, last)["loss"], valid.mean(), rtol=1e-5)
    state, metrics = tr.make_train_step(OBJ, SGD)(tr.init_state(params, SGD), batches[1])
    assert np.isfinite(metrics["loss"]) and int(state.step) == 1


def test_keras_adam_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match=r"keras_adam: beta_1 must be in \[0, 1\); got 1.0"):
        tr.keras_adam(beta_1=1.0)
    with pytest.raises(ValueError, match="keras_adam: decay must be >= 0; got -0.1"):
        tr.keras_adam(decay=-0.1)


def test_make_train_step_takes_model_loss_optimizer_like_the_objective_form():
    import optax
    import seqjax as sj
    from seqjax import losses, train

    model = sj.chain(sj.lstm(5), sj.dense(2))
    params = model.init(jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (4, 6, 3))
    ys = jax.random.normal(jax.random.key(2), (4, 6, 2))
    opt = optax.adam(1e-2)
    a = train.make_train_step(model, losses.mse, opt, donate=False)
    b = train.make_train_step(train.objective(model, losses.mse), opt, donate=False)
    sa, ma = a(train.init_state(params, opt), (xs, ys))
    sb, mb = b(train.init_state(params, opt), (xs, ys))
    jax.tree.map(np.testing.assert_array_equal, sa.params, sb.params)
    assert float(ma["loss"]) == float(mb["loss"])
    np.testing.assert_allclose(train.make_eval_step(model, losses.mse)(sa.params, (xs, ys))["loss"],
                               train.make_eval_step(train.objective(model, losses.mse))(sa.params, (xs, ys))["loss"])
    with pytest.raises(TypeError,
                       match="make_train_step: with a cell pass \\(model, loss, optimizer\\); got no optimizer"):
        train.make_train_step(model, losses.mse)
    with pytest.raises(TypeError, match="make_train_step: with an Objective pass \\(objective, optimizer\\)"):
        train.make_train_step(train.objective(model, losses.mse), losses.mse, opt)
