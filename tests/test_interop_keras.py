"""seqjax.interop <-> Keras 3 layer weights (`get_weights()` lists).

Checked four ways: round trips (exact); a float64 NumPy implementation of Keras's cell equations run on
the Keras weight layout itself; Keras's own golden values from its LSTM / GRU / SimpleRNN /
Bidirectional tests (keras/src/layers/rnn/*_test.py, Keras 3.15.1), reproduced with constant-weight
params built directly in seqjax, without Keras; and, where Keras is installed, the real layers.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqjax as sj
from seqjax import interop

os.environ.setdefault("KERAS_BACKEND", "jax")  # before any `import keras` (parity tests below)

B, T, F, H = 3, 5, 4, 6
scan = jax.jit(sj.scan, static_argnums=0, static_argnames=("reverse", "masked_output"))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def keras_reference(kind, weights, xs, reset_after=True, mask=None, zero_output_for_mask=False):
    """Keras's cell equations (lstm.py / gru.py / simple_rnn.py) in float64 on get_weights(): (ys, states)."""
    kernel, recurrent, bias = (np.asarray(w, np.float64) for w in weights)
    x = np.asarray(xs, np.float64)
    hidden = recurrent.shape[0]
    h = np.zeros((x.shape[0], hidden))
    c = np.zeros_like(h)
    ys, last = [], np.zeros_like(h)
    for t in range(x.shape[1]):
        xt = x[:, t]
        if kind == "lstm":
            i, f, g, o = np.split(xt @ kernel + h @ recurrent + bias, 4, axis=-1)
            c_new = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h_new = _sigmoid(o) * np.tanh(c_new)
        elif kind == "gru" and reset_after:
            x_z, x_r, x_h = np.split(xt @ kernel + bias[0], 3, axis=-1)
            r_z, r_r, r_h = np.split(h @ recurrent + bias[1], 3, axis=-1)
            z, r = _sigmoid(x_z + r_z), _sigmoid(x_r + r_r)
            h_new = z * h + (1 - z) * np.tanh(x_h + r * r_h)
            c_new = c
        elif kind == "gru":
            x_z, x_r, x_h = np.split(xt @ kernel + bias, 3, axis=-1)
            u_z, u_r, u_h = np.split(recurrent, 3, axis=-1)
            z, r = _sigmoid(x_z + h @ u_z), _sigmoid(x_r + h @ u_r)
            h_new = z * h + (1 - z) * np.tanh(x_h + (r * h) @ u_h)
            c_new = c
        else:
            h_new = np.tanh(xt @ kernel + bias + h @ recurrent)
            c_new = c
        if mask is not None:  # Keras: masked steps keep the state; output the previous one (or zeros)
            m = mask[:, t, None]
            h_new, c_new = np.where(m, h_new, h), np.where(m, c_new, c)
            out = np.where(m, h_new, 0.0 if zero_output_for_mask else last)
        else:
            out = h_new
        h, c, last = h_new, c_new, out
        ys.append(out)
    return np.stack(ys, 1), ([h, c] if kind == "lstm" else [h])


def random_weights(kind, seed=0, reset_after=True, in_features=F, hidden=H):
    """Random arrays with the shapes of a Keras layer's get_weights()."""
    rng = np.random.default_rng(seed)
    cols = {"lstm": 4, "gru": 3, "simple_rnn": 1}[kind] * hidden
    bias_shape = (2, cols) if kind == "gru" and reset_after else (cols,)
    return [rng.normal(0, 0.5, s).astype(np.float32) for s in ((in_features, cols), (hidden, cols), bias_shape)]


@functools.lru_cache(maxsize=None)
def make(kind, reset_after=True, hidden=H):
    return {"lstm": lambda: sj.lstm(hidden), "simple_rnn": lambda: sj.simple_rnn(hidden),
            "gru": lambda: sj.gru(hidden, reset_after=reset_after)}[kind]()


def xs_BTF(seed=1):
    return np.random.default_rng(seed).normal(size=(B, T, F)).astype(np.float32)


CASES = [("lstm", True), ("gru", True), ("gru", False), ("simple_rnn", True)]


@pytest.mark.parametrize("kind,reset_after", CASES)
def test_from_keras_matches_keras_equations(kind, reset_after):
    weights = random_weights(kind, reset_after=reset_after)
    cell = make(kind, reset_after)
    params = interop.from_keras(weights, cell)
    xs = xs_BTF()
    carry, ys = scan(cell, params, cell.initial_carry(B), xs)
    want_ys, want_states = keras_reference(kind, weights, xs, reset_after)
    np.testing.assert_allclose(ys, want_ys, atol=2e-5)
    for got, want in zip(interop.carry_to_keras(carry, cell), want_states):
        np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize("kind,reset_after", CASES)
def test_masked_scan_matches_keras_masking(kind, reset_after):
    """Keras's RNN layer with a mask: state kept, previous output repeated (zeros with zero_output_for_mask)."""
    weights = random_weights(kind, seed=5, reset_after=reset_after)
    cell = make(kind, reset_after)
    params = interop.from_keras(weights, cell)
    xs = xs_BTF(6)
    mask = np.array([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 0, 1, 0, 1]], bool)
    for masked_output, zero in (("previous", False), ("zero", True)):
        carry, ys = scan(cell, params, cell.initial_carry(B), xs, mask=mask, masked_output=masked_output)
        want_ys, want_states = keras_reference(kind, weights, xs, reset_after, mask, zero)
        np.testing.assert_allclose(ys, want_ys, atol=2e-5)
        np.testing.assert_allclose(carry.h, want_states[0], atol=2e-5)


@pytest.mark.parametrize("kind,reset_after", CASES)
def test_round_trips_are_exact(kind, reset_after):
    weights = random_weights(kind, seed=2, reset_after=reset_after)
    cell = make(kind, reset_after)
    back = interop.to_keras(interop.from_keras(weights, cell), cell)  # keras -> seqjax -> keras
    assert [w.shape for w in back] == [w.shape for w in weights]
    for a, b in zip(back, weights):
        np.testing.assert_array_equal(a, b)
    params = interop.from_keras(weights, cell)
    again = interop.from_keras(interop.to_keras(params, cell), cell)  # seqjax -> keras -> seqjax
    for k in params:
        np.testing.assert_array_equal(again[k], params[k])


def test_reset_before_gru_folds_the_recurrent_bias_exactly():
    """In the reset_after=False form b_h sits outside r, so to_keras's b_x + b_h computes the same."""
    cell = make("gru", False)
    rng = np.random.default_rng(3)
    params = {k: jnp.asarray(rng.normal(0, 0.5, s), jnp.float32) for k, s in
              (("w_x", (F, 3 * H)), ("w_h", (H, 3 * H)), ("b_x", (3 * H,)), ("b_h", (3 * H,)))}
    weights = interop.to_keras(params, cell)
    np.testing.assert_allclose(weights[2], params["b_x"] + params["b_h"], rtol=0, atol=0)
    xs = xs_BTF()
    _, ys = scan(cell, params, cell.initial_carry(B), xs)
    want, _ = keras_reference("gru", weights, xs, reset_after=False)
    np.testing.assert_allclose(ys, want, atol=2e-5)


def test_use_bias_false_layers_load_with_zero_biases():
    kernel, recurrent, _ = random_weights("gru")
    params = interop.from_keras([kernel, recurrent], make("gru"))
    np.testing.assert_array_equal(params["b_x"], np.zeros(3 * H, np.float32))
    np.testing.assert_array_equal(params["b_h"], np.zeros(3 * H, np.float32))


def test_chain_flat_and_per_layer_lists_and_bidirectional():
    cell = sj.chain(sj.embed(11, F), sj.bidirectional(sj.lstm(H), sj.lstm(H)), sj.activation("tanh"),
                    sj.gru(H - 1), sj.dense(2))
    rng = np.random.default_rng(4)
    per_layer = [[rng.normal(size=(11, F)).astype(np.float32)],
                 random_weights("lstm", 5) + random_weights("lstm", 6),
                 [],
                 random_weights("gru", 7, in_features=2 * H, hidden=H - 1),
                 [rng.normal(size=(H - 1, 2)).astype(np.float32), rng.normal(size=(2,)).astype(np.float32)]]
    flat = [w for ws in per_layer for w in ws]
    a = interop.from_keras(per_layer, cell)
    b = interop.from_keras(flat, cell)
    c = interop.from_keras([[]] + per_layer[:2] + [[], []] + per_layer[2:], cell)  # + InputLayer, Dropout
    for x, y, z in zip(jax.tree.leaves(a), jax.tree.leaves(b), jax.tree.leaves(c)):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    np.testing.assert_array_equal(a[1].backward["w_x"], per_layer[1][3])
    back = interop.to_keras(a, cell)
    assert len(back) == 5 and back[2] == []
    for ws, want in zip(back, per_layer):
        for x, y in zip(ws, want):
            np.testing.assert_array_equal(x, y)
    # the bidirectional layer's numbers: forward + backward passes by the Keras equations
    xs = xs_BTF()
    bi = sj.bidirectional(make("lstm"), make("lstm"))
    carry, ys = sj.scan(bi, a[1], bi.initial_carry(B), xs)
    fwd, _ = keras_reference("lstm", per_layer[1][:3], xs)
    bwd, _ = keras_reference("lstm", per_layer[1][3:], xs[:, ::-1])
    np.testing.assert_allclose(ys, np.concatenate([fwd, bwd[:, ::-1]], -1), atol=2e-5)
    states = interop.carry_to_keras(carry, bi)
    assert len(states) == 4
    np.testing.assert_allclose(states[2], bwd[:, -1], atol=2e-5)


def test_keras_states_round_trip():
    cell = sj.chain(make("lstm"), sj.dense(3), make("gru"))
    rng = np.random.default_rng(8)
    states = [[rng.normal(size=(B, H)).astype(np.float32) for _ in range(2)], [],
              [rng.normal(size=(B, H)).astype(np.float32)]]
    carry = interop.carry_from_keras(states, cell)
    assert isinstance(carry[0], sj.LSTMCarry) and carry[1] == () and isinstance(carry[2], sj.GRUCarry)
    np.testing.assert_array_equal(carry[0].c, states[0][1])
    back = interop.carry_to_keras(carry, cell)
    for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(states)):
        np.testing.assert_array_equal(x, y)


# ---- errors ---------------------------------------------------------------------------------------------

def test_gru_form_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"from a Keras GRU\(reset_after=True\) .* build the cell with reset_after"):
        interop.from_keras(random_weights("gru", reset_after=True), make("gru", False))
    with pytest.raises(ValueError, match=r"from a Keras GRU\(reset_after=False\) .*sj.gru\(6, reset_after=False\)"):
        interop.from_keras(random_weights("gru", reset_after=False), make("gru", True))


@pytest.mark.parametrize("weights,cell,error,match", [
    (random_weights("lstm"), sj.lstm(H + 1), ValueError, r"weights\[0\] \(kernel\) must have shape \(\?, 28\)"),
    (random_weights("lstm")[:1], sj.lstm(H), ValueError, "LSTM weights are .* weights has 1 arrays"),
    (random_weights("lstm") + random_weights("lstm")[:2], sj.bidirectional(sj.lstm(H), sj.lstm(H)), ValueError,
     "forward layer's then the backward layer's"),
    (random_weights("lstm"), sj.chain(sj.lstm(H), sj.dense(2)), ValueError,
     "or a flat list of 5 arrays .*; got 3 arrays"),
    (np.zeros(3), sj.lstm(H), TypeError, r"weights must be a list of arrays \(layer.get_weights\(\)\)"),
])
def test_weight_errors(weights, cell, error, match):
    with pytest.raises(error, match=match):
        interop.from_keras(weights, cell)


def test_unrepresentable_cells():
    cell = sj.bidirectional(sj.chain(sj.lstm(H)), sj.chain(sj.lstm(H)))
    with pytest.raises(ValueError, match="to_keras: Keras's Bidirectional wraps one recurrent layer"):
        interop.to_keras(None, cell)  # the cell is refused before the params are looked at
    with pytest.raises(ValueError, match="to_keras: params do not fit the cell"):
        interop.to_keras(interop.from_keras(random_weights("lstm"), make("lstm")), sj.lstm(H + 1))
    with pytest.raises(ValueError, match=r"carry_from_keras: sj.lstm takes 2 Keras state arrays"):
        interop.carry_from_keras([np.zeros((B, H), np.float32)], make("lstm"))


# ---- Keras's own golden values (no Keras needed) --------------------------------------------------------

def const_params(kind, hidden, in_features, *, bias=0.03, unit_forget_bias=True, use_bias=True, reset_after=True,
                 kernel=0.01, recurrent=0.02):
    """Params as Keras's Constant(kernel) / Constant(recurrent) / Constant(bias) initialisers make them."""
    blocks = {"lstm": 4, "gru": 3, "simple_rnn": 1}[kind]
    p = {"w_x": jnp.full((in_features, blocks * hidden), kernel, jnp.float32),
         "w_h": jnp.full((hidden, blocks * hidden), recurrent, jnp.float32)}
    b = jnp.full((blocks * hidden,), bias if use_bias else 0.0, jnp.float32)
    if kind == "lstm":
        p["b"] = b.at[hidden:2 * hidden].set(1.0) if (use_bias and unit_forget_bias) else b
    elif kind == "gru":  # reset_after=True: a (2, 3H) bias, both rows constant; False: one (3H,) bias
        p["b_x"], p["b_h"] = b, (b if reset_after else jnp.zeros_like(b))
    else:
        p["b"] = b
    return p


def seq(*shape):
    return np.arange(np.prod(shape)).reshape(shape).astype("float32")


GOLDEN_LAST = [  # (kind, hidden, cell kwargs, params kwargs, go_backwards, expected last output per sample)
    ("lstm", 3, {}, {}, False, [0.6288687, 0.86899155, 0.9460773]),
    ("lstm", 3, {}, {}, True, [0.35622165, 0.74789524, 0.8872726]),
    ("lstm", 3, {}, {"unit_forget_bias": False}, False, [0.57019705, 0.8661914, 0.9459622]),
    ("lstm", 3, {}, {"use_bias": False}, False, [0.54986924, 0.86226785, 0.9443936]),
    ("gru", 3, {}, {}, False, [0.5217289, 0.6371659, 0.39384964]),
    ("gru", 3, {}, {}, True, [0.24406259, 0.611516, 0.3928808]),
    ("gru", 3, {"reset_after": False}, {"reset_after": False}, False, [0.51447755, 0.6426879, 0.40208298]),
    ("gru", 3, {}, {"use_bias": False}, False, [0.49988455, 0.64701194, 0.4103359]),
]


@pytest.mark.parametrize("kind,hidden,cell_kw,params_kw,backwards,expected", GOLDEN_LAST)
def test_keras_golden_values_lstm_gru(kind, hidden, cell_kw, params_kw, backwards, expected):
    """lstm_test.py / gru_test.py `test_correctness`: sequence arange(72) as (3, 6, 4), last output."""
    cell = {"lstm": sj.lstm, "gru": sj.gru}[kind](hidden, **cell_kw)
    params = const_params(kind, hidden, 4, **params_kw)
    carry, ys = sj.scan(cell, params, cell.initial_carry(3), seq(3, 6, 4), reverse=backwards)
    last = ys[:, 0] if backwards else ys[:, -1]  # go_backwards: Keras's last output read the first step last
    np.testing.assert_allclose(last, np.repeat(np.array(expected)[:, None], hidden, 1), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(carry.h, last, atol=0)


def test_keras_golden_gru_weights_through_from_keras():
    """The same GRU golden values, with Keras's own weight layout converted by from_keras."""
    for reset_after, expected in ((True, 0.5217289), (False, 0.51447755)):
        bias = np.full((2, 9) if reset_after else (9,), 0.03, np.float32)
        weights = [np.full((4, 9), 0.01, np.float32), np.full((3, 9), 0.02, np.float32), bias]
        cell = sj.gru(3, reset_after=reset_after)
        _, ys = sj.scan(cell, interop.from_keras(weights, cell), cell.initial_carry(3), seq(3, 6, 4))
        np.testing.assert_allclose(ys[0, -1], [expected] * 3, atol=1e-5)


def test_keras_golden_values_simple_rnn():
    """simple_rnn_test.py `test_correctness`: arange(24) as (2, 3, 4), SimpleRNN(4)."""
    cell = sj.simple_rnn(4)
    params = const_params("simple_rnn", 4, 4)
    _, ys = sj.scan(cell, params, cell.initial_carry(2), seq(2, 3, 4))
    np.testing.assert_allclose(ys[:, -1, 0], [0.405432, 0.73605347], atol=1e-5)
    _, ys = sj.scan(cell, params, cell.initial_carry(2), seq(2, 3, 4), reverse=True)
    np.testing.assert_allclose(ys[:, 0, 0], [0.11144729, 0.5528889], atol=1e-5)


def test_keras_golden_values_stateful_and_initial_state():
    """lstm_test.py `test_statefulness` (second call continues the state) and `test_pass_initial_state`."""
    cell = sj.lstm(4)
    params = const_params("lstm", 4, 4)
    carry, _ = sj.scan(cell, params, cell.initial_carry(2), seq(2, 3, 4))
    _, ys = sj.scan(cell, params, carry, seq(2, 3, 4))
    np.testing.assert_allclose(ys[:, -1, 0], [0.3124785, 0.6863672], atol=1e-5)

    cell = sj.lstm(2)
    params = const_params("lstm", 2, 3)
    state = [np.arange(4).reshape((2, 2)).astype("float32")] * 2
    carry0 = interop.carry_from_keras(state, cell)
    _, ys = sj.scan(cell, params, carry0, seq(2, 4, 3))
    np.testing.assert_allclose(ys[:, -1], [[0.20574439, 0.3558822], [0.64930826, 0.66276]], atol=1e-5)
    _, ys = sj.scan(cell, params, carry0, seq(2, 4, 3), reverse=True)
    np.testing.assert_allclose(ys[:, 0], [[0.13281618, 0.2790356], [0.5839337, 0.5992567]], atol=1e-5)


def test_keras_golden_values_masking():
    """lstm_test.py / gru_test.py `test_masking`: masked steps repeat the previous output (Keras's default);
    zero_output_for_mask=True gives zeros, i.e. masked_output="zero"."""
    xs = seq(2, 4, 3)
    lstm = sj.lstm(2)
    p = const_params("lstm", 2, 3)
    mask = np.array([[True, True, True, False], [True, True, False, False]])
    _, ys = sj.scan(lstm, p, lstm.initial_carry(2), xs, mask=mask)
    np.testing.assert_allclose(ys[0, :, 0], [0.01588910, 0.05552048, 0.11755939, 0.11755939], atol=1e-5)
    np.testing.assert_allclose(ys[1, :, 0], [0.14185596, 0.28556206, 0.28556206, 0.28556206], atol=1e-5)
    _, ys = sj.scan(lstm, p, lstm.initial_carry(2), xs, mask=mask, masked_output="zero")
    np.testing.assert_allclose(ys[0, :, 0], [0.01588910, 0.05552048, 0.11755939, 0.0], atol=1e-5)

    gru = sj.gru(2)
    p = const_params("gru", 2, 3)
    mask = np.array([[True, True, False, True], [True, False, False, True]])
    carry, ys = sj.scan(gru, p, gru.initial_carry(2), xs, mask=mask)
    np.testing.assert_allclose(ys[0, :, 0], [0.03606692, 0.09497581, 0.09497581, 0.19393763], atol=1e-5)
    np.testing.assert_allclose(ys[1, :, 0], [0.16051409, 0.16051409, 0.16051409, 0.30818558], atol=1e-5)
    _, ys = sj.scan(gru, p, gru.initial_carry(2), xs, mask=mask, masked_output="zero")
    np.testing.assert_allclose(ys[1, :, 0], [0.16051409, 0.0, 0.0, 0.30818558], atol=1e-5)
    back, _ = sj.scan(gru, p, gru.initial_carry(2), xs, mask=mask, reverse=True)  # go_backwards=True
    np.testing.assert_allclose(back.h[:, 0], [0.11669192, 0.28380975], atol=1e-5)

    rnn = sj.simple_rnn(2)
    _, ys = sj.scan(rnn, const_params("simple_rnn", 2, 3), rnn.initial_carry(2), xs, mask=mask)
    np.testing.assert_allclose(ys[0, :, 0], [0.0599281, 0.15122814, 0.15122814, 0.32394567], atol=1e-5)
    np.testing.assert_allclose(ys[1, :, 0], [0.3969304, 0.3969304, 0.3969304, 0.608085], atol=1e-5)


def test_keras_golden_values_bidirectional():
    """bidirectional_test.py `test_correctness` and `test_masking`. Keras's many-to-one Bidirectional output
    is the two final states concatenated: forward after the last step, backward after the first."""
    xs = seq(2, 3, 4)
    p = const_params("simple_rnn", 2, 4)
    bi = sj.bidirectional(sj.simple_rnn(2), sj.simple_rnn(2))
    carry, _ = sj.scan(bi, sj.BidirectionalParams(p, p), bi.initial_carry(2), xs)
    last = np.concatenate([carry.forward.h, carry.backward.h], -1)
    np.testing.assert_allclose(last, [[0.39687276, 0.39687276, 0.10004295, 0.10004295],
                                      [0.7237238, 0.7237238, 0.53391594, 0.53391594]], atol=1e-5)
    np.testing.assert_allclose((carry.forward.h + carry.backward.h) / 2, [[0.24845785] * 2, [0.6288199] * 2],
                               atol=1e-5)  # merge_mode="ave"
    p_back = const_params("simple_rnn", 2, 4, kernel=0.03, recurrent=0.02, bias=0.01)
    carry, _ = sj.scan(bi, sj.BidirectionalParams(p, p_back), bi.initial_carry(2), xs)
    np.testing.assert_allclose(carry.forward.h * carry.backward.h, [[0.08374989] * 2, [0.6740834] * 2], atol=1e-5)

    g = const_params("gru", 2, 4)
    bi_sum = sj.bidirectional(sj.gru(2), sj.gru(2), merge="sum")
    _, ys = sj.scan(bi_sum, sj.BidirectionalParams(g, g), bi_sum.initial_carry(2), xs)
    np.testing.assert_allclose(ys[..., 0], [[0.20937867, 0.34462988, 0.40290534],
                                            [0.59829646, 0.6734641, 0.6479671]], atol=1e-5)

    g = const_params("gru", 2, 3)
    bi_gru = sj.bidirectional(sj.gru(2), sj.gru(2))
    mask = np.array([[True, True, False, True], [True, False, False, True]])
    carry, _ = sj.scan(bi_gru, sj.BidirectionalParams(g, g), bi_gru.initial_carry(2), seq(2, 4, 3), mask=mask)
    np.testing.assert_allclose(np.concatenate([carry.forward.h, carry.backward.h], -1),
                               [[0.19393763, 0.19393763, 0.11669192, 0.11669192],
                                [0.30818558, 0.30818558, 0.28380975, 0.28380975]], atol=1e-5)


# ---- parity with real Keras layers (optional `peers` extra) -----------------------------------------------

@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def _keras_layer(keras, kind, reset_after, **kw):
    kw.update(kernel_initializer="zeros", recurrent_initializer="zeros")  # cheap build; _randomize sets them
    if kind == "lstm":
        return keras.layers.LSTM(H, **kw)
    if kind == "gru":
        return keras.layers.GRU(H, reset_after=reset_after, **kw)
    return keras.layers.SimpleRNN(H, **kw)


def _randomize(layer, seed):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()])


@pytest.mark.parametrize("kind,reset_after", CASES)
def test_parity_with_keras_layers(keras, kind, reset_after):
    xs = xs_BTF()
    # single layer, outputs and states
    layer = _keras_layer(keras, kind, reset_after, return_sequences=True, return_state=True)
    layer.build((None, T, F))
    _randomize(layer, 1)
    out = layer(xs)
    cell = make(kind, reset_after)
    params = interop.from_keras(layer.get_weights(), cell)
    carry, ys = scan(cell, params, cell.initial_carry(B), xs)
    np.testing.assert_allclose(ys, out[0], atol=1e-5)
    for got, want in zip(interop.carry_to_keras(carry, cell), out[1:]):
        np.testing.assert_allclose(got, want, atol=1e-5)
    # stacked model with a per-step head, from model.get_weights(); and back with to_keras
    model = keras.Sequential([keras.Input((T, F)), _keras_layer(keras, kind, reset_after, return_sequences=True),
                              _keras_layer(keras, kind, reset_after, return_sequences=True),
                              keras.layers.TimeDistributed(keras.layers.Dense(2, kernel_initializer="zeros"))])
    for i, lyr in enumerate(model.layers):
        _randomize(lyr, 10 + i)
    stack = sj.chain(make(kind, reset_after), make(kind, reset_after), sj.dense(2))
    sparams = interop.from_keras(model.get_weights(), stack)
    _, ys = sj.scan(stack, sparams, stack.initial_carry(B), xs)
    np.testing.assert_allclose(ys, model(xs), atol=1e-5)
    original = model.get_weights()
    for lyr, w in zip(model.layers, interop.to_keras(sparams, stack)):  # to_keras fits set_weights exactly
        lyr.set_weights(w)
    for a, b in zip(model.get_weights(), original):
        np.testing.assert_array_equal(a, b)
    # go_backwards=True: reverse=True, with Keras's outputs in processing order
    back = _keras_layer(keras, kind, reset_after, return_sequences=True, go_backwards=True)
    back.build((None, T, F))
    back.set_weights(layer.get_weights())
    _, ys = scan(cell, params, cell.initial_carry(B), xs, reverse=True)
    np.testing.assert_allclose(ys[:, ::-1], back(xs), atol=1e-5)
    # bidirectional, sequences and final states
    bl = keras.layers.Bidirectional(_keras_layer(keras, kind, reset_after, return_sequences=True,
                                                 return_state=True))
    bl.build((None, T, F))
    _randomize(bl, 3)
    bout = bl(xs)
    bi = sj.bidirectional(make(kind, reset_after), make(kind, reset_after))
    bcarry, bys = scan(bi, interop.from_keras(bl.get_weights(), bi), bi.initial_carry(B), xs)
    np.testing.assert_allclose(bys, bout[0], atol=1e-5)
    for got, want in zip(interop.carry_to_keras(bcarry, bi), bout[1:]):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_masking_semantics_against_keras(keras, kind):
    """Keras's LSTM/GRU (return_sequences=True) repeat the previous output at masked steps and Keras's
    Bidirectional forces zero_output_for_mask=True (zeros); seqjax's default does the same per layer."""
    xs = xs_BTF(9)
    mask = np.array([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 0, 1, 0, 1]], bool)
    layer = _keras_layer(keras, kind, True, return_sequences=True)
    layer.build((None, T, F))
    _randomize(layer, 4)
    cell = make(kind)
    params = interop.from_keras(layer.get_weights(), cell)
    _, ys = scan(cell, params, cell.initial_carry(B), xs, mask=mask)
    np.testing.assert_allclose(ys, layer(xs, mask=mask), atol=1e-5)
    masking = keras.Sequential([keras.Input((T, F)), keras.layers.Masking(0.0), layer])
    xs0 = np.where(mask[..., None], xs, 0.0).astype(np.float32)
    np.testing.assert_allclose(ys, masking(xs0), atol=1e-5)  # same through a Masking layer

    bl = keras.layers.Bidirectional(_keras_layer(keras, kind, True, return_sequences=True))
    bl.build((None, T, F))
    _randomize(bl, 5)
    bi = sj.bidirectional(make(kind), make(kind))
    bparams = interop.from_keras(bl.get_weights(), bi)
    want = np.asarray(bl(xs, mask=mask))
    _, default = scan(bi, bparams, bi.initial_carry(B), xs, mask=mask)
    np.testing.assert_allclose(default, want, atol=1e-5)  # seqjax's default follows Keras's Bidirectional
    _, zero = scan(bi, bparams, bi.initial_carry(B), xs, mask=mask, masked_output="zero")
    np.testing.assert_array_equal(zero, default)
    _, prev = scan(bi, bparams, bi.initial_carry(B), xs, mask=mask, masked_output="previous")
    assert np.max(np.abs(np.asarray(prev) - want)) > 1e-2  # the explicit "previous" repeats instead
