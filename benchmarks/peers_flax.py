"""Flax linen peer: `nn.RNN(nn.OptimizedLSTMCell)` / `nn.RNN(nn.GRUCell)` + `nn.Dense`, jitted, optax Adam.

Flax's GRU has no recurrent bias on the z and r gates; seqjax's `b_h` for those gates is folded into
the input bias (the same function), and both halves of the folded bias get its gradient back.
"""

from __future__ import annotations

import numpy as np

from benchmarks.problems import LEARNING_RATE, Problem, adam_step
from benchmarks.timing import Contender

NAME = "flax"
LSTM_GATES = "ifgo"  # seqjax block order; Flax names kernels ii, if, ig, io / hi, hf, hg, ho
GRU_GATES = "zrn"  # seqjax block order; Flax names iz, ir, in / hz, hr, hn


def available() -> bool:
    try:
        import flax.linen  # noqa: F401
    except ImportError:
        return False
    return True


def _blocks(a, n):
    return np.split(np.asarray(a), n, axis=-1)


def to_flax(problem: Problem) -> dict:
    """seqjax layer params -> the `cell` subtree of Flax's params."""
    p = problem.layer
    if problem.cell == "lstm":
        tree = {}
        for gate, wx, wh, b in zip(LSTM_GATES, _blocks(p["w_x"], 4), _blocks(p["w_h"], 4), _blocks(p["b"], 4)):
            tree["i" + gate] = {"kernel": wx}
            tree["h" + gate] = {"kernel": wh, "bias": b}
        return tree
    tree = {}
    bx, bh = _blocks(p["b_x"], 3), _blocks(p["b_h"], 3)
    for k, (gate, wx, wh) in enumerate(zip(GRU_GATES, _blocks(p["w_x"], 3), _blocks(p["w_h"], 3))):
        if gate == "n":
            tree["in"] = {"kernel": wx, "bias": bx[k]}
            tree["hn"] = {"kernel": wh, "bias": bh[k]}
        else:
            tree["i" + gate] = {"kernel": wx, "bias": bx[k] + bh[k]}
            tree["h" + gate] = {"kernel": wh}
    return tree


def from_flax_grads(problem: Problem, tree) -> dict:
    """Gradients in Flax's cell layout -> seqjax layer layout (inverse of `to_flax`)."""
    g = {k: {kk: np.asarray(vv) for kk, vv in v.items()} for k, v in tree.items()}
    if problem.cell == "lstm":
        return {"w_x": np.concatenate([g["i" + q]["kernel"] for q in LSTM_GATES], -1),
                "w_h": np.concatenate([g["h" + q]["kernel"] for q in LSTM_GATES], -1),
                "b": np.concatenate([g["h" + q]["bias"] for q in LSTM_GATES], -1)}
    # the folded z/r bias is b_x + b_h, so both get its gradient
    return {"w_x": np.concatenate([g["i" + q]["kernel"] for q in GRU_GATES], -1),
            "w_h": np.concatenate([g["h" + q]["kernel"] for q in GRU_GATES], -1),
            "b_x": np.concatenate([g["iz"]["bias"], g["ir"]["bias"], g["in"]["bias"]], -1),
            "b_h": np.concatenate([g["iz"]["bias"], g["ir"]["bias"], g["hn"]["bias"]], -1)}


def _cell(problem: Problem):
    import flax.linen as nn

    h = problem.config.hidden
    return nn.OptimizedLSTMCell(h) if problem.cell == "lstm" else nn.GRUCell(h)


def _model(problem: Problem):
    import flax.linen as nn

    cell, features = _cell(problem), problem.config.features

    class Model(nn.Module):
        @nn.compact
        def __call__(self, xs):
            return nn.Dense(features)(nn.RNN(cell)(xs))

    return Model()


def _model_params(problem: Problem):
    import jax.numpy as jnp

    cell = {k: {kk: jnp.asarray(vv) for kk, vv in v.items()} for k, v in to_flax(problem).items()}
    head = {"kernel": jnp.asarray(problem.head["w"]), "bias": jnp.asarray(problem.head["b"])}
    return {"params": {"RNN_0": {"cell": cell}, "Dense_0": head}}


def forward(problem: Problem) -> Contender:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    rnn = nn.RNN(_cell(problem))
    variables = {"params": {"cell": _model_params(problem)["params"]["RNN_0"]["cell"]}}
    xs = jnp.asarray(problem.xs)
    fn = jax.jit(rnn.apply)
    return Contender(NAME, lambda: fn(variables, xs), lambda: {"ys": np.asarray(fn(variables, xs))},
                     f"jit(nn.RNN({type(rnn.cell).__name__}).apply)")


def train(problem: Problem) -> Contender:
    import jax
    import jax.numpy as jnp
    import optax

    model = _model(problem)
    variables = _model_params(problem)
    xs, targets = jnp.asarray(problem.xs), jnp.asarray(problem.targets)
    optimizer = optax.adam(LEARNING_RATE)
    opt_state = optimizer.init(variables)

    def loss_fn(variables):
        return jnp.mean((model.apply(variables, xs) - targets) ** 2)

    train_step = adam_step(loss_fn, optimizer)
    grad_fn = jax.jit(jax.value_and_grad(loss_fn))

    def result():
        loss, grads = grad_fn(variables)
        g = grads["params"]
        out = {"loss": np.asarray(loss)}
        out.update({f"layer.{k}": v for k, v in from_flax_grads(problem, g["RNN_0"]["cell"]).items()})
        out["head.w"], out["head.b"] = np.asarray(g["Dense_0"]["kernel"]), np.asarray(g["Dense_0"]["bias"])
        return out

    return Contender(NAME, lambda: train_step(variables, opt_state), result,
                     "jit(value_and_grad(mse(nn.RNN + nn.Dense)) + optax.adam)")


def rollout(problem: Problem) -> Contender:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    cell = _cell(problem)
    variables = _model_params(problem)["params"]
    context = jnp.asarray(problem.context)
    steps = problem.closed_loop
    warm = nn.RNN(cell, return_carry=True)
    dense = nn.Dense(problem.config.features)

    @jax.jit
    def predict(variables, context):
        cell_vars, head_vars = {"params": variables["RNN_0"]["cell"]}, {"params": variables["Dense_0"]}
        carry, ys = warm.apply({"params": {"cell": cell_vars["params"]}}, context)
        y = dense.apply(head_vars, ys[:, -1])

        def body(state, _):
            carry, y = state
            carry, h = cell.apply(cell_vars, carry, y)
            y = dense.apply(head_vars, h)
            return (carry, y), y

        _, future = jax.lax.scan(body, (carry, y), None, length=steps)
        return jnp.swapaxes(future, 0, 1)

    return Contender(NAME, lambda: predict(variables, context),
                     lambda: {"future": np.asarray(predict(variables, context))},
                     "jit(nn.RNN warm-up + lax.scan(cell, dense))")


BUILDERS = {"forward": forward, "train": train, "rollout": rollout}
