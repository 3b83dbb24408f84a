"""seqjax.interop <-> PyTorch nn.LSTM / nn.GRU / nn.RNN state dicts.

Numerics are checked three ways: round trips (exact), a float64 NumPy implementation of PyTorch's
documented equations run on the state-dict layout itself (no torch needed), and, where torch is
installed, the real modules.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

import seqjax as sj
from seqjax import interop

B, T, F, H = 3, 5, 4, 6
KINDS = {"lstm": (sj.lstm, 4), "gru": (sj.gru, 3), "simple_rnn": (sj.simple_rnn, 1)}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def torch_reference(kind, sd, xs, layers, dirs, h0=None, c0=None):
    """PyTorch's equations (torch.nn docs) in float64 on the state dict: (out [B,T,D*H], h_n, c_n)."""
    x = np.asarray(xs, np.float64)
    batch, steps, _ = x.shape
    hidden = sd["weight_hh_l0"].shape[1]
    h_n, c_n = [], []
    for layer in range(layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh = (np.asarray(sd[n + sfx], np.float64) for n in ("weight_ih", "weight_hh"))
            b_ih, b_hh = (np.asarray(sd[n + sfx], np.float64) for n in ("bias_ih", "bias_hh"))
            i = layer * dirs + d
            h = np.zeros((batch, hidden)) if h0 is None else np.asarray(h0[i], np.float64)
            c = np.zeros((batch, hidden)) if c0 is None else np.asarray(c0[i], np.float64)
            ys = np.zeros((batch, steps, hidden))
            order = range(steps - 1, -1, -1) if d else range(steps)
            for t in order:
                gx, gh = x[:, t] @ w_ih.T + b_ih, h @ w_hh.T + b_hh
                if kind == "lstm":
                    ig, fg, gg, og = np.split(gx + gh, 4, axis=-1)
                    c = _sigmoid(fg) * c + _sigmoid(ig) * np.tanh(gg)
                    h = _sigmoid(og) * np.tanh(c)
                elif kind == "gru":
                    xr, xz, xn = np.split(gx, 3, axis=-1)
                    hr, hz, hn = np.split(gh, 3, axis=-1)
                    r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
                    n = np.tanh(xn + r * hn)
                    h = (1 - z) * n + z * h
                else:
                    h = np.tanh(gx + gh)
                ys[:, t] = h
            outs.append(ys)
            h_n.append(h)
            c_n.append(c)
        x = np.concatenate(outs, axis=-1)
    return x, np.stack(h_n), np.stack(c_n)


def random_state_dict(kind, layers, dirs, seed=0, in_features=F):
    """A state dict with PyTorch's keys and shapes, random values (no torch needed)."""
    rng = np.random.default_rng(seed)
    rows = KINDS[kind][1] * H
    sd = {}
    for layer in range(layers):
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            f_in = in_features if layer == 0 else dirs * H
            for name, shape in (("weight_ih", (rows, f_in)), ("weight_hh", (rows, H)), ("bias_ih", (rows,)),
                                ("bias_hh", (rows,))):
                sd[name + sfx] = rng.normal(0, 0.5, shape).astype(np.float32)
    return sd


@functools.lru_cache(maxsize=None)
def make_cell(kind, layers, dirs):
    """One cell object per configuration, so the jitted scan below compiles once per configuration."""
    make = KINDS[kind][0]
    one = (lambda: sj.bidirectional(make(H), make(H))) if dirs == 2 else (lambda: make(H))
    return sj.chain(*[one() for _ in range(layers)]) if layers > 1 else one()


scan = jax.jit(sj.scan, static_argnums=0)


def random_params(cell, seed=0, in_features=F):
    """Params with the structure `cell.init` makes, every leaf random (nonzero biases), without running init."""
    shapes = jax.eval_shape(lambda key: cell.init(key, in_features), jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jax.numpy.asarray(rng.normal(0, 0.5, s.shape), s.dtype), shapes)


def xs_BTF(seed=1):
    return np.random.default_rng(seed).normal(size=(B, T, F)).astype(np.float32)


SHAPES = [(1, 1), (2, 1), (1, 2), (2, 2)]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("layers,dirs", SHAPES)
def test_from_torch_matches_pytorch_equations(kind, layers, dirs):
    sd = random_state_dict(kind, layers, dirs)
    cell = make_cell(kind, layers, dirs)
    params = interop.from_torch(sd, cell)
    xs = xs_BTF()
    rng = np.random.default_rng(2)
    h0 = rng.normal(size=(layers * dirs, B, H)).astype(np.float32)
    c0 = rng.normal(size=(layers * dirs, B, H)).astype(np.float32)
    state = (h0, c0) if kind == "lstm" else h0
    carry, ys = scan(cell, params, interop.carry_from_torch(state, cell), xs)
    want_ys, want_h, want_c = torch_reference(kind, sd, xs, layers, dirs, h0, c0)
    np.testing.assert_allclose(ys, want_ys, atol=2e-5)
    got = interop.carry_to_torch(carry, cell)
    np.testing.assert_allclose(got.h_n, want_h, atol=2e-5)
    if kind == "lstm":
        np.testing.assert_allclose(got.c_n, want_c, atol=2e-5)
    else:
        assert got.c_n is None


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("layers,dirs", SHAPES)
def test_round_trip_seqjax_torch_seqjax_is_exact(kind, layers, dirs):
    cell = make_cell(kind, layers, dirs)
    params = random_params(cell, seed=3)
    sd = interop.to_torch(params, cell)
    back = interop.from_torch(sd, cell)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert a.dtype == b.dtype


def test_to_torch_layout_keys_order_and_shapes():
    cell = make_cell("gru", 2, 2)
    params = random_params(cell)
    sd = interop.to_torch(params, cell)
    names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    want = [f"{n}_l{layer}{sfx}" for layer in range(2) for sfx in ("", "_reverse") for n in names]
    assert list(sd) == want
    assert sd["weight_ih_l0"].shape == (3 * H, F)
    assert sd["weight_ih_l1"].shape == (3 * H, 2 * H)
    assert sd["weight_hh_l1_reverse"].shape == (3 * H, H)
    # PyTorch's GRU blocks are r, z, n; seqjax's are z, r, n
    w_x = np.asarray(params[0].forward["w_x"])
    np.testing.assert_array_equal(sd["weight_ih_l0"][:H], w_x[:, H:2 * H].T)
    np.testing.assert_array_equal(sd["weight_ih_l0"][H:2 * H], w_x[:, :H].T)
    np.testing.assert_array_equal(sd["bias_hh_l0"][2 * H:], np.asarray(params[0].forward["b_h"])[2 * H:])


def test_lstm_double_bias_is_folded_and_split():
    sd = random_state_dict("lstm", 1, 1)
    params = interop.from_torch(sd, sj.lstm(H))
    np.testing.assert_allclose(params["b"], sd["bias_ih_l0"] + sd["bias_hh_l0"], rtol=0, atol=0)
    out = interop.to_torch(params, sj.lstm(H))
    np.testing.assert_array_equal(out["bias_ih_l0"], np.asarray(params["b"]))
    np.testing.assert_array_equal(out["bias_hh_l0"], np.zeros(4 * H, np.float32))
    # the split state dict computes what the original one does
    xs = xs_BTF()
    ref, _, _ = torch_reference("lstm", sd, xs, 1, 1)
    again, _, _ = torch_reference("lstm", out, xs, 1, 1)
    np.testing.assert_allclose(again, ref, atol=1e-6)


def test_bias_false_module_loads_with_zero_biases():
    sd = {k: v for k, v in random_state_dict("simple_rnn", 1, 1).items() if k.startswith("weight")}
    params = interop.from_torch(sd, sj.simple_rnn(H))
    np.testing.assert_array_equal(params["b"], np.zeros(H, np.float32))
    np.testing.assert_array_equal(params["w_x"], sd["weight_ih_l0"].T)


def test_prefix_selects_one_module_of_a_model():
    sd = {f"encoder.rnn.{k}": v for k, v in random_state_dict("gru", 1, 1).items()}
    sd["head.weight"] = np.ones((2, H), np.float32)
    params = interop.from_torch(sd, sj.gru(H), prefix="encoder.rnn.")
    np.testing.assert_array_equal(params["b_h"][:H], sd["encoder.rnn.bias_hh_l0"][H:2 * H])  # z block


def test_tensor_like_values_are_converted_by_duck_typing():
    class FakeTensor:  # what torch.Tensor offers: detach().cpu().numpy()
        def __init__(self, a):
            self.a = a

        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return self.a

    sd = random_state_dict("lstm", 1, 1)
    params = interop.from_torch({k: FakeTensor(v) for k, v in sd.items()}, sj.lstm(H))
    np.testing.assert_array_equal(params["w_h"], sd["weight_hh_l0"].T)


def test_params_come_in_the_cells_dtype():
    sd = {k: v.astype(np.float64) for k, v in random_state_dict("lstm", 1, 1).items()}
    params = interop.from_torch(sd, sj.lstm(H, dtype=np.float32))
    assert all(a.dtype == np.float32 for a in jax.tree.leaves(params))


# ---- errors: never a silent approximation ----------------------------------------------------------------

def test_reset_before_gru_has_no_torch_form():
    cell = sj.gru(H, reset_after=False)
    with pytest.raises(ValueError, match=r"to_torch: PyTorch's nn.GRU is the reset_after=True form"):
        interop.to_torch(random_params(cell), cell)
    with pytest.raises(ValueError, match=r"from_torch: .*reset_after=False"):
        interop.from_torch(random_state_dict("gru", 1, 1), cell)


def test_dense_head_in_chain_is_an_error():
    cell = sj.chain(sj.lstm(H), sj.dense(2))
    with pytest.raises(ValueError, match=r"to_torch: .*part 1 of the chain is sj.dense"):
        interop.to_torch(random_params(cell), cell)


@pytest.mark.parametrize("cell,match", [
    (sj.chain(sj.lstm(H), sj.gru(H)), "mixes gru, lstm"),
    (sj.chain(sj.lstm(H), sj.lstm(H + 1)), r"one hidden_size .* \[6, 7\]"),
    (sj.chain(sj.bidirectional(sj.lstm(H), sj.lstm(H)), sj.lstm(H)), "bidirectional or none"),
    (sj.bidirectional(sj.lstm(H), sj.lstm(H), merge="sum"), "merges with 'sum'"),
    (sj.lstm(H, activation="relu"), r"tanh and sigmoid; .*activation='relu'"),
    (sj.simple_rnn(H, activation="sigmoid"), "nonlinearity 'tanh' or 'relu'"),
])
def test_cells_without_a_torch_form(cell, match):
    with pytest.raises(ValueError, match=match):
        interop.to_torch(random_params(cell), cell)


def test_relu_simple_rnn_is_allowed():
    cell = sj.simple_rnn(H, activation="relu")
    sd = interop.to_torch(random_params(cell), cell)
    assert sd["weight_ih_l0"].shape == (H, F)


@pytest.mark.parametrize("mutate,match", [
    (lambda sd: sd.update(weight_hr_l0=np.zeros((2, H), np.float32)), "proj_size"),
    (lambda sd: sd.update({k + "_reverse": v for k, v in list(sd.items())}), "use sj.bidirectional"),
    (lambda sd: sd.pop("weight_hh_l0"), r"missing keys .*weight_hh_l0"),
    (lambda sd: sd.update(weight_hh_l0=np.zeros((4 * H, H + 1), np.float32)),
     r"state_dict\['weight_hh_l0'\] must have shape \(24, 6\)"),
])
def test_state_dict_errors(mutate, match):
    sd = random_state_dict("lstm", 1, 1)
    mutate(sd)
    with pytest.raises(ValueError, match=match):
        interop.from_torch(sd, sj.lstm(H))


def test_more_layers_than_the_cell():
    with pytest.raises(ValueError, match="more layers than the cell's 1"):
        interop.from_torch(random_state_dict("lstm", 2, 1), sj.lstm(H))


def test_wrong_hidden_size_and_kind():
    with pytest.raises(ValueError, match=r"weight_ih_l0'\] must have shape \(28, \?\)"):
        interop.from_torch(random_state_dict("lstm", 1, 1), sj.lstm(H + 1))
    with pytest.raises(ValueError, match=r"must have shape \(18, \?\)"):
        interop.from_torch(random_state_dict("lstm", 1, 1), sj.gru(H))


def test_bad_arguments():
    with pytest.raises(TypeError, match="from_torch: state_dict must be a mapping"):
        interop.from_torch([1, 2], sj.lstm(H))
    with pytest.raises(ValueError, match="no key of state_dict starts with prefix 'rnn.'"):
        interop.from_torch(random_state_dict("lstm", 1, 1), sj.lstm(H), prefix="rnn.")
    with pytest.raises(TypeError, match="from_torch: cell must be a seqjax Cell"):
        interop.from_torch(random_state_dict("lstm", 1, 1), "lstm")
    with pytest.raises(ValueError, match="to_torch: params do not fit the cell"):
        interop.to_torch(random_params(sj.lstm(H)), sj.lstm(H + 2))
    with pytest.raises(TypeError, match=r"carry_from_torch: state must be the LSTM's \(h_n, c_n\) pair"):
        interop.carry_from_torch(np.zeros((1, B, H), np.float32), sj.lstm(H))
    with pytest.raises(TypeError, match="carry_to_torch: a bidirectional layer's carry must be BidirectionalCarry"):
        interop.carry_to_torch(sj.lstm(H).initial_carry(B), make_cell("lstm", 1, 2))
    with pytest.raises(ValueError, match=r"h_n must have shape \(2, 3, 6\) \(\[layers \* directions"):
        interop.carry_from_torch(np.zeros((1, B, H), np.float32), make_cell("gru", 2, 1))


# ---- parity with the real PyTorch modules (optional `peers` extra) ----------------------------------------

@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("layers,dirs", SHAPES)
def test_parity_with_pytorch(kind, layers, dirs):
    torch = pytest.importorskip("torch")
    module_cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "simple_rnn": torch.nn.RNN}[kind]
    torch.manual_seed(layers * 10 + dirs)
    module = module_cls(F, H, num_layers=layers, bidirectional=dirs == 2, batch_first=True)
    cell = make_cell(kind, layers, dirs)
    params = interop.from_torch(module.state_dict(), cell)
    xs = xs_BTF()
    h0 = torch.randn(layers * dirs, B, H)
    c0 = torch.randn(layers * dirs, B, H)
    state = (h0, c0) if kind == "lstm" else h0
    with torch.no_grad():
        out, final = module(torch.from_numpy(xs), state)
    carry, ys = scan(cell, params, interop.carry_from_torch(state, cell), xs)
    np.testing.assert_allclose(ys, out.numpy(), atol=1e-5)
    got = interop.carry_to_torch(carry, cell)
    if kind == "lstm":
        np.testing.assert_allclose(got.h_n, final[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(got.c_n, final[1].numpy(), atol=1e-5)
    else:
        np.testing.assert_allclose(got.h_n, final.numpy(), atol=1e-5)
    # and back: seqjax params loaded into a fresh module give the same outputs
    other = module_cls(F, H, num_layers=layers, bidirectional=dirs == 2, batch_first=True)
    other.load_state_dict({k: torch.from_numpy(v) for k, v in interop.to_torch(params, cell).items()})
    with torch.no_grad():
        again, _ = other(torch.from_numpy(xs), state)
    np.testing.assert_allclose(again.numpy(), out.numpy(), atol=1e-5)
