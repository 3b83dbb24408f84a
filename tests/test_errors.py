"""Bad input raises a clear ValueError/TypeError at trace time naming the function, argument and shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqjax as sj

B, T, F, H = 3, 5, 2, 4


@pytest.fixture
def lstm():
    cell = sj.lstm(H)
    return cell, cell.init(jax.random.key(0), F)


def test_xs_of_the_wrong_rank(lstm):
    cell, params = lstm
    with pytest.raises(ValueError, match=r"sj.scan: xs must be \[batch, time, 2\] for this cell; got \(5, 2\) "
                                         r"— add a batch axis"):
        sj.scan(cell, params, cell.initial_carry(B), np.ones((T, F), np.float32))
    with pytest.raises(ValueError, match=r"sj.scan: xs must be \[batch, time, 2\].*got \(3, 5, 2, 1\)"):
        sj.scan(cell, params, cell.initial_carry(B), np.ones((B, T, F, 1), np.float32))


def test_feature_size_that_does_not_match_the_params(lstm):
    cell, params = lstm
    with pytest.raises(ValueError, match=r"sj.scan: xs must be \[batch, time, 2\] for this cell \(its params "
                                         r"take 2 features\); got \(3, 5, 3\)"):
        sj.scan(cell, params, cell.initial_carry(B), np.ones((B, T, 3), np.float32))


def test_params_of_another_size(lstm):
    cell, _ = lstm
    other = sj.lstm(H + 1).init(jax.random.key(0), F)
    with pytest.raises(ValueError, match=r"sj.lstm: params\['w_x'\] must have shape \[\?, 16\]; got \(2, 20\)"):
        sj.scan(cell, other, cell.initial_carry(B), np.ones((B, T, F), np.float32))
    no_bias = {k: v for k, v in sj.gru(H).init(jax.random.key(0), F).items() if k != "b_x"}
    with pytest.raises(ValueError, match=r"sj.gru: params must be a dict with key 'b_x'; got \['b_h', 'w_h', 'w_x'\]"):
        sj.scan(sj.gru(H), no_bias, sj.gru(H).initial_carry(B),
                np.ones((B, T, F), np.float32))
    with pytest.raises(ValueError, match=r"sj.chain: params must be a tuple of 2 parts' params"):
        model = sj.chain(sj.lstm(H), sj.dense(1))
        sj.scan(model, (other,), model.initial_carry(B), np.ones((B, T, F), np.float32))


def test_carry_of_the_wrong_batch_size_or_structure(lstm):
    cell, params = lstm
    xs = np.ones((B, T, F), np.float32)
    with pytest.raises(ValueError, match=r"sj.scan: carry leaves must have shape \(3, 4\) \(batch 3\); got \(2, 4\)"):
        sj.scan(cell, params, cell.initial_carry(2), xs)
    with pytest.raises(ValueError, match=r"sj.scan: carry must have the structure of lstm.initial_carry\(3\).*"
                                         r"GRUCarry.*another model"):
        sj.scan(cell, params, sj.gru(H).initial_carry(B), xs)
    with pytest.raises(ValueError, match=r"sj.scan: carry must have the structure"):
        sj.scan(cell, params, (jnp.zeros((B, H)), jnp.zeros((B, H))), xs)  # a bare tuple is not LSTMCarry
    with pytest.raises(TypeError, match=r"sj.scan: carry leaves must be floating; got int32"):
        sj.scan(cell, params, sj.LSTMCarry(jnp.zeros((B, H), jnp.int32), jnp.zeros((B, H))), xs)


@pytest.mark.parametrize("argument", ["mask", "reset"])
def test_mask_or_reset_of_the_wrong_shape_or_dtype(lstm, argument):
    cell, params = lstm
    xs = np.ones((B, T, F), np.float32)
    with pytest.raises(ValueError, match=rf"sj.scan: {argument} must be \[batch, time\] = \(3, 5\) bool; "
                                         rf"got shape \(5, 3\)"):
        sj.scan(cell, params, cell.initial_carry(B), xs, **{argument: np.ones((T, B), bool)})
    with pytest.raises(TypeError, match=rf"sj.scan: {argument} must be bool.*got dtype int"):
        sj.scan(cell, params, cell.initial_carry(B), xs, **{argument: np.ones((B, T), np.int32)})


def test_non_float_inputs_to_a_float_cell(lstm):
    cell, params = lstm
    with pytest.raises(TypeError, match=r"sj.scan: xs must be a floating array .* got dtype int32"):
        sj.scan(cell, params, cell.initial_carry(B), np.ones((B, T, F), np.int32))
    emb = sj.embed(10, 3)
    with pytest.raises(TypeError, match=r"sj.scan: xs must hold integer token ids for this cell; got dtype float32"):
        sj.scan(emb, emb.init(jax.random.key(0), None), (), np.ones((B, T), np.float32))


@pytest.mark.parametrize("build, message", [
    (lambda: sj.lstm(0), r"sj.lstm: hidden_size must be an int >= 1; got 0"),
    (lambda: sj.gru(-3), r"sj.gru: hidden_size must be an int >= 1; got -3"),
    (lambda: sj.simple_rnn(2.5), r"sj.simple_rnn: hidden_size must be an int >= 1; got 2.5"),
    (lambda: sj.dense(0), r"sj.dense: features must be an int >= 1; got 0"),
    (lambda: sj.embed(0, 3), r"sj.embed: vocab_size must be an int >= 1; got 0"),
    (lambda: sj.lstm(4).init(jax.random.key(0), 0), r"sj.lstm.init: in_features must be an int >= 1; got 0"),
    (lambda: sj.gru(4).initial_carry(0), r"sj.gru.initial_carry: batch_size must be an int >= 1; got 0"),
    (lambda: sj.lstm(4, dropout=1.0), r"sj.lstm: dropout must be a float in \[0, 1\); got 1.0"),
    (lambda: sj.lstm(4, activation="swishy"), r"sj.lstm: activation must be a callable or one of"),
    (lambda: sj.lstm(4, dtype=jnp.int32), r"sj.lstm: dtype must be a floating dtype"),
    (lambda: sj.chain(), r"sj.chain: needs at least one cell"),
    (lambda: sj.chain(sj.lstm(2), "dense"), r"sj.chain: argument 1 must be a seqjax Cell"),
])
def test_zero_or_negative_sizes_and_bad_options(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()


def test_zero_length_sequences_and_other_options(lstm):
    cell, params = lstm
    with pytest.raises(ValueError, match=r"sj.scan: xs must have at least one time step; got shape \(3, 0, 2\)"):
        sj.scan(cell, params, cell.initial_carry(B), np.ones((B, 0, F), np.float32))
    xs = np.ones((B, T, F), np.float32)
    with pytest.raises(ValueError, match=r"sj.scan: unroll must be an int >= 1; got 0"):
        sj.scan(cell, params, cell.initial_carry(B), xs, unroll=0)
    with pytest.raises(ValueError, match=r"sj.scan: masked_output must be one of \[None, 'previous', 'zero'\]"):
        sj.scan(cell, params, cell.initial_carry(B), xs, masked_output="nan")
    with pytest.raises(TypeError, match=r"sj.scan: key must be a PRNG key"):
        sj.scan(cell, params, cell.initial_carry(B), xs, key=3)
    with pytest.raises(TypeError, match=r"sj.scan: cell must be a seqjax Cell"):
        sj.scan(params, params, cell.initial_carry(B), xs)


def test_chain_parts_that_do_not_fit():
    model = sj.chain(sj.lstm(H), sj.dense(2))
    params = model.init(jax.random.key(0), F)
    wrong = (params[0], sj.dense(2).init(jax.random.key(1), H + 3))
    with pytest.raises(ValueError, match=r"sj.chain: part 1 \(dense\) takes steps of shape \(7,\) but part 0 "
                                         r"\(lstm\) outputs \(4,\)"):
        sj.scan(model, wrong, model.initial_carry(B), np.ones((B, T, F), np.float32))


def test_errors_are_raised_at_trace_time_under_jit(lstm):
    cell, params = lstm
    f = jax.jit(lambda p, c, x: sj.scan(cell, p, c, x))
    with pytest.raises(ValueError, match=r"sj.scan: xs must be \[batch, time, 2\]"):
        f(params, cell.initial_carry(B), jnp.ones((B, T, 7)))
