"""LSTM and GRU against Flax linen's LSTMCell / GRUCell with mapped weights."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

import seqjax as sj

B, T, F, H = 3, 6, 4, 5


def flax_lstm_to_seqjax(variables):
    """Flax LSTMCell params -> seqjax LSTM params.

    Flax keeps one Dense per gate: input kernels `i{i,f,g,o}` [F, H] (no bias) and recurrent kernels
    `h{i,f,g,o}` [H, H] with the bias. seqjax stacks the gate blocks i, f, g, o along the last axis.
    """
    p = variables["params"]
    gates = "ifgo"
    return {
        "w_x": jnp.concatenate([p[f"i{g}"]["kernel"] for g in gates], axis=1),
        "w_h": jnp.concatenate([p[f"h{g}"]["kernel"] for g in gates], axis=1),
        "b": jnp.concatenate([p[f"h{g}"]["bias"] for g in gates]),
    }


def flax_gru_to_seqjax(variables):
    """Flax GRUCell params -> seqjax GRU params (reset_after=True).

    Flax: input Dense `ir`, `iz`, `in` [F, H] with bias; recurrent `hr`, `hz` [H, H] without bias and
    `hn` with bias. seqjax blocks are z, r, n, so b_x = (b_iz, b_ir, b_in), b_h = (0, 0, b_hn).
    """
    p = variables["params"]
    zeros = jnp.zeros((p["hn"]["kernel"].shape[1],))
    return {
        "w_x": jnp.concatenate([p[k]["kernel"] for k in ("iz", "ir", "in")], axis=1),
        "w_h": jnp.concatenate([p[k]["kernel"] for k in ("hz", "hr", "hn")], axis=1),
        "b_x": jnp.concatenate([p[k]["bias"] for k in ("iz", "ir", "in")]),
        "b_h": jnp.concatenate([zeros, zeros, p["hn"]["bias"]]),
    }


def randomize(variables, seed):
    leaves, treedef = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape) * 0.5 for k, x in zip(keys, leaves)])


def run_flax(cell, variables, carry, xs):
    ys = []
    for t in range(xs.shape[1]):
        carry, y = cell.apply(variables, carry, xs[:, t])
        ys.append(y)
    return carry, jnp.stack(ys, 1)


def test_lstm_matches_flax_lstmcell():
    xs = jax.random.normal(jax.random.key(0), (B, T, F))
    cell = nn.LSTMCell(H)
    variables = randomize(cell.init(jax.random.key(1), (jnp.zeros((B, H)), jnp.zeros((B, H))), xs[:, 0]), 2)
    c0, h0 = jax.random.normal(jax.random.key(3), (B, H)), jax.random.normal(jax.random.key(4), (B, H))
    (c_f, h_f), ys_f = run_flax(cell, variables, (c0, h0), xs)
    carry, ys = sj.scan(sj.lstm(H), flax_lstm_to_seqjax(variables), sj.LSTMCarry(h=h0, c=c0), xs)
    np.testing.assert_allclose(ys, ys_f, atol=1e-5)
    np.testing.assert_allclose(carry.h, h_f, atol=1e-5)
    np.testing.assert_allclose(carry.c, c_f, atol=1e-5)


def test_gru_matches_flax_grucell():
    xs = jax.random.normal(jax.random.key(5), (B, T, F))
    cell = nn.GRUCell(H)
    variables = randomize(cell.init(jax.random.key(6), jnp.zeros((B, H)), xs[:, 0]), 7)
    h0 = jax.random.normal(jax.random.key(8), (B, H))
    h_f, ys_f = run_flax(cell, variables, h0, xs)
    carry, ys = sj.scan(sj.gru(H), flax_gru_to_seqjax(variables), sj.GRUCarry(h0), xs)
    np.testing.assert_allclose(ys, ys_f, atol=1e-5)
    np.testing.assert_allclose(carry.h, h_f, atol=1e-5)
