"""Independent float64 NumPy references for the cells, written from the equations (not from seqjax)."""

from __future__ import annotations

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np64(tree):
    """Params dict -> float64 NumPy arrays."""
    return {k: np.asarray(v, np.float64) for k, v in tree.items()}


def lstm_step(p, h, c, x, mm=np.matmul):
    """`mm(a, w)`: how a matmul is done (mixed precision: operands rounded first)."""
    H = h.shape[-1]
    z = mm(x, p["w_x"]) + mm(h, p["w_h"]) + p["b"]
    i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    return h, c


def gru_step(p, h, x, reset_after=True, mm=np.matmul):
    H = h.shape[-1]
    wx = lambda k: p["w_x"][:, k * H:(k + 1) * H]  # noqa: E731
    wh = lambda k: p["w_h"][:, k * H:(k + 1) * H]  # noqa: E731
    bx = lambda k: p["b_x"][k * H:(k + 1) * H]  # noqa: E731
    bh = lambda k: p["b_h"][k * H:(k + 1) * H]  # noqa: E731
    z = sigmoid(mm(x, wx(0)) + bx(0) + mm(h, wh(0)) + bh(0))
    r = sigmoid(mm(x, wx(1)) + bx(1) + mm(h, wh(1)) + bh(1))
    if reset_after:
        n = np.tanh(mm(x, wx(2)) + bx(2) + r * (mm(h, wh(2)) + bh(2)))
    else:
        n = np.tanh(mm(x, wx(2)) + bx(2) + mm(r * h, wh(2)) + bh(2))
    return z * h + (1 - z) * n


def simple_rnn_step(p, h, x, mm=np.matmul):
    return np.tanh(mm(x, p["w_x"]) + mm(h, p["w_h"]) + p["b"])


def run_lstm(p, xs_BTF, h=None, c=None, mask_BT=None, mm=np.matmul):
    """Whole sequence; masked steps keep (h, c) and repeat the previous output (zeros at first)."""
    p = np64(p)
    B, T, _ = xs_BTF.shape
    H = p["w_h"].shape[0]
    h = np.zeros((B, H)) if h is None else np.asarray(h, np.float64)
    c = np.zeros((B, H)) if c is None else np.asarray(c, np.float64)
    ys, prev = [], np.zeros((B, H))
    for t in range(T):
        h_new, c_new = lstm_step(p, h, c, np.asarray(xs_BTF[:, t], np.float64), mm)
        m = np.ones(B, bool) if mask_BT is None else np.asarray(mask_BT[:, t])
        h = np.where(m[:, None], h_new, h)
        c = np.where(m[:, None], c_new, c)
        prev = np.where(m[:, None], h_new, prev)
        ys.append(prev)
    return np.stack(ys, 1), h, c


def lstm_backward(p, xs_BTF, h0, c0, dys_BTH, dh, dc):
    """Backpropagation through time of `run_lstm` (no mask), from the gradients of its outputs `dys_BTH`
    and of its final `h, c` (`dh, dc`): `(grads {w_x, w_h, b}, dh0, dc0, dxs_BTF)`, float64."""
    p = np64(p)
    xs = np.asarray(xs_BTF, np.float64)
    B, T, _ = xs.shape
    H = p["w_h"].shape[0]
    hs, cs = [np.asarray(h0, np.float64)], [np.asarray(c0, np.float64)]
    gates = []
    for t in range(T):  # forward, keeping every step's gates and carry
        z = xs[:, t] @ p["w_x"] + hs[-1] @ p["w_h"] + p["b"]
        i, f, g, o = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
        cs.append(f * cs[-1] + i * g)
        hs.append(o * np.tanh(cs[-1]))
        gates.append((i, f, g, o))
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    dxs = np.zeros_like(xs)
    dh, dc = np.asarray(dh, np.float64), np.asarray(dc, np.float64)
    for t in reversed(range(T)):
        i, f, g, o = gates[t]
        dh = dh + np.asarray(dys_BTH[:, t], np.float64)
        tc = np.tanh(cs[t + 1])
        dc = dc + dh * o * (1 - tc ** 2)
        dz = np.concatenate([dc * g * i * (1 - i), dc * cs[t] * f * (1 - f), dc * i * (1 - g ** 2),
                             dh * tc * o * (1 - o)], axis=1)
        grads["w_x"] += xs[:, t].T @ dz
        grads["w_h"] += hs[t].T @ dz
        grads["b"] += dz.sum(0)
        dxs[:, t] = dz @ p["w_x"].T
        dh, dc = dz @ p["w_h"].T, dc * f
    return grads, dh, dc, dxs


def lstm_closed_loop(p, w_d, b_d, x0, h0, c0, steps):
    """An LSTM and an affine head in closed loop: `h_t, c_t = lstm(x_t, ...)`, `y_t = h_t w_d + b_d`, `x_(t+1) =
    y_t`, from `x0 [B, F]`: `(ys [B, steps, F], h, c)`, float64."""
    p = np64(p)
    w_d, b_d = np.asarray(w_d, np.float64), np.asarray(b_d, np.float64)
    x, h, c = (np.asarray(a, np.float64) for a in (x0, h0, c0))
    ys = []
    for _ in range(steps):
        h, c = lstm_step(p, h, c, x)
        x = h @ w_d + b_d
        ys.append(x)
    return np.stack(ys, 1), h, c


def stack_closed_loop(layers, w_d, b_d, x0, carries, steps):
    """A stack of layers (`("lstm" | "gru", params)`, bottom first) and an affine head in closed loop: layer 0
    takes `x_t`, each layer above the `h_t` of the one below, `y_t = h_t^top w_d + b_d`, `x_(t+1) = y_t`, from
    `x0 [B, F]` and `carries` (per layer `(h, c)` or `(h,)`): `(ys [B, steps, F], carries)`, float64."""
    layers = [(name, np64(p)) for name, p in layers]
    w_d, b_d = np.asarray(w_d, np.float64), np.asarray(b_d, np.float64)
    x = np.asarray(x0, np.float64)
    carries = [tuple(np.asarray(a, np.float64) for a in c) for c in carries]
    ys = []
    for _ in range(steps):
        inp = x
        for i, (name, p) in enumerate(layers):
            carries[i] = lstm_step(p, *carries[i], inp) if name == "lstm" else (gru_step(p, carries[i][0], inp),)
            inp = carries[i][0]
        x = inp @ w_d + b_d
        ys.append(x)
    return np.stack(ys, 1), carries


def gru_backward(p, xs_BTF, h0, dys_BTH, dh):
    """Backpropagation through time of `run_gru` (`reset_after`, no mask), from the gradients of its outputs
    `dys_BTH` and of its final `h` (`dh`): `(grads {w_x, w_h, b_x, b_h}, dh0, dxs_BTF)`, float64."""
    p = np64(p)
    xs = np.asarray(xs_BTF, np.float64)
    B, T, _ = xs.shape
    H = p["w_h"].shape[0]
    hs, saved = [np.asarray(h0, np.float64)], []
    for t in range(T):  # forward, keeping every step's gates and `h w_hn + b_hn`
        zx, zh = xs[:, t] @ p["w_x"] + p["b_x"], hs[-1] @ p["w_h"] + p["b_h"]
        z, r = sigmoid(zx[:, :H] + zh[:, :H]), sigmoid(zx[:, H:2 * H] + zh[:, H:2 * H])
        n = np.tanh(zx[:, 2 * H:] + r * zh[:, 2 * H:])
        hs.append(z * hs[-1] + (1 - z) * n)
        saved.append((z, r, n, zh[:, 2 * H:]))
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    dxs = np.zeros_like(xs)
    dh = np.asarray(dh, np.float64)
    for t in reversed(range(T)):
        z, r, n, hn = saved[t]
        dh = dh + np.asarray(dys_BTH[:, t], np.float64)
        dn = dh * (1 - z) * (1 - n ** 2)
        dz = dh * (hs[t] - n) * z * (1 - z)
        dr = dn * hn * r * (1 - r)
        d_x, d_h = np.concatenate([dz, dr, dn], axis=1), np.concatenate([dz, dr, dn * r], axis=1)
        grads["w_x"] += xs[:, t].T @ d_x
        grads["b_x"] += d_x.sum(0)
        grads["w_h"] += hs[t].T @ d_h
        grads["b_h"] += d_h.sum(0)
        dxs[:, t] = d_x @ p["w_x"].T
        dh = dh * z + d_h @ p["w_h"].T
    return grads, dh, dxs


def gru_closed_loop(p, w_d, b_d, x0, h0, steps):
    """`lstm_closed_loop` for a GRU (`reset_after`): `(ys [B, steps, F], h)`, float64."""
    p = np64(p)
    w_d, b_d = np.asarray(w_d, np.float64), np.asarray(b_d, np.float64)
    x, h = (np.asarray(a, np.float64) for a in (x0, h0))
    ys = []
    for _ in range(steps):
        h = gru_step(p, h, x)
        x = h @ w_d + b_d
        ys.append(x)
    return np.stack(ys, 1), h


def run_gru(p, xs_BTF, h=None, reset_after=True, mask_BT=None, mm=np.matmul):
    p = np64(p)
    B, T, _ = xs_BTF.shape
    H = p["w_h"].shape[0]
    h = np.zeros((B, H)) if h is None else np.asarray(h, np.float64)
    ys, prev = [], np.zeros((B, H))
    for t in range(T):
        h_new = gru_step(p, h, np.asarray(xs_BTF[:, t], np.float64), reset_after, mm)
        m = np.ones(B, bool) if mask_BT is None else np.asarray(mask_BT[:, t])
        h = np.where(m[:, None], h_new, h)
        prev = np.where(m[:, None], h_new, prev)
        ys.append(prev)
    return np.stack(ys, 1), h


def run_simple_rnn(p, xs_BTF, h=None, mm=np.matmul):
    p = np64(p)
    B, T, _ = xs_BTF.shape
    h = np.zeros((B, p["w_h"].shape[0])) if h is None else np.asarray(h, np.float64)
    ys = []
    for t in range(T):
        h = simple_rnn_step(p, h, np.asarray(xs_BTF[:, t], np.float64), mm)
        ys.append(h)
    return np.stack(ys, 1), h


def bfloat16_matmul(a, w):
    """Mixed precision: both operands rounded to bfloat16 (from float32, as seqjax holds them), the
    products summed in float64."""
    import ml_dtypes

    def rounded(x):
        return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)

    return rounded(a) @ rounded(w)


def random_params(cell_name, key_seed, F, H, scale=0.5):
    """Random (non-initialiser) params so every weight and bias matters."""
    rng = np.random.default_rng(key_seed)
    blocks = {"lstm": 4, "gru": 3, "simple_rnn": 1}[cell_name]
    p = {
        "w_x": rng.normal(0, scale, (F, blocks * H)),
        "w_h": rng.normal(0, scale, (H, blocks * H)),
    }
    if cell_name == "gru":
        p["b_x"] = rng.normal(0, scale, (blocks * H,))
        p["b_h"] = rng.normal(0, scale, (blocks * H,))
    else:
        p["b"] = rng.normal(0, scale, (blocks * H,))
    return {k: v.astype(np.float32) for k, v in p.items()}
