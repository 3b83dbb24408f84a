"""Each attempt at the recurrent loops' cost, measured side by side (the "attempts" table of BENCHMARKS.md).

    python -m benchmarks.attempts --config medium --what forward,train,rollout
    python -m benchmarks.attempts --config large --what overlap,gru_forward,gru_train
    python -m benchmarks.attempts --config large --what chunks,blas
    python -m benchmarks.attempts --config many --what head
    python -m benchmarks.attempts --config large --what strassen   # the rollout and the closed-loop kernel alone
    python -m benchmarks.attempts --config medium --what devices
    python -m benchmarks.attempts --config medium --what lanes
    python -m benchmarks.attempts --config medium --what native,native_train
    python -m benchmarks.attempts --config medium --what train_head
    python -m benchmarks.attempts --config small --what stack_closed_loop --out stack_small.json
    python -m benchmarks.attempts --config medium --what devices_loop --no-wait   # deadlocked on a 2-vCPU machine

Within a group every variant computes the same function (every group but train: the outputs are
checked equal to the first variant's, in devices to the same work's on one device, to float32 tolerance
before timing; train: the same Adam step of `chain(lstm, dense)`); only how the loop is built differs.
The kept ones are what `seqjax.fast.plan.plan_for` chooses; the others are here so their measured effect
can be reproduced.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import seqjax as sj
import seqjax.fast._common as fast_common
from seqjax.fast import gru as fast_gru
from seqjax.fast import lstm as fast_lstm
from seqjax.fast import native
from benchmarks import problems, timing
from benchmarks.report import machine, versions
from seqjax.fast import plan as plan_module
from seqjax.fast.plan import Plan, chunk_steps, plan_for


def _describe(plan: Plan) -> str:
    """The plan's fields that differ from `Plan()`."""
    return ", ".join(f"{k}={v}" for k, v in plan._asdict().items() if v != Plan._field_defaults[k]) or "defaults"


@contextlib.contextmanager
def _plans(pick):
    """Every plan the fast paths ask `plan_for` for is `pick(chosen)` instead, `chosen()` the one it would pick."""
    old = fast_common.plan_for
    fast_common.plan_for = lambda *a, **k: pick(lambda: old(*a, **k))
    try:
        yield
    finally:
        fast_common.plan_for = old


def _plan(plan: Plan):
    """Every plan `plan`."""
    return _plans(lambda chosen: plan)


def _plan_fields(**fields):
    """Every plan `plan_for` picks, with `fields` replaced."""
    return _plans(lambda chosen: chosen()._replace(**fields))


def _sig_tanh(x):
    return 0.5 * jnp.tanh(0.5 * x) + 0.5


def _lstm_gates(z, c, sig=jax.nn.sigmoid):
    """The LSTM step from its pre-activations `z [..., 4H]` and cell state `c`: `(h, c)` new."""
    hidden = z.shape[-1] // 4
    i, f, g, o = (z[..., k * hidden:(k + 1) * hidden] for k in range(4))
    c = sig(f) * c + sig(i) * jnp.tanh(g)
    return sig(o) * jnp.tanh(c), c


def _custom_loop(params, xs_TB, *, form: str, sig=jax.nn.sigmoid, unroll=1):
    """Forward loops that are not the fast path's: returns ys_TB."""
    w_x, w_h, b = params["w_x"], params["w_h"], params["b"]
    hidden = w_h.shape[0]
    batch = xs_TB.shape[1]
    h0 = jnp.zeros((batch, hidden), w_h.dtype)

    def cell(z, c):
        return _lstm_gates(z, c, sig)

    if form == "hoist_one_buffer":  # the form DESIGN.md first measured: gates sliced out of [T, B, 4H]
        zx = xs_TB @ w_x + b

        def body(carry, z_t):
            h, c = carry
            h, c = cell(z_t + h @ w_h, c)
            return (h, c), h

        return lax.scan(body, (h0, h0), zx, unroll=unroll)[1]
    if form == "hoist_per_gate":
        zx = xs_TB @ w_x + b
        gates = tuple(zx[..., k * hidden:(k + 1) * hidden] for k in range(4))
        w_gates = tuple(w_h[:, k * hidden:(k + 1) * hidden] for k in range(4))

        def body(carry, zs):
            h, c = carry
            i, f, g, o = (z + h @ w for z, w in zip(zs, w_gates))
            c = sig(f) * c + sig(i) * jnp.tanh(g)
            h = sig(o) * jnp.tanh(c)
            return (h, c), h

        return lax.scan(body, (h0, h0), gates, unroll=unroll)[1]
    if form == "concat_xh":
        w = jnp.concatenate([w_x, w_h], axis=0)

        def body(carry, x):
            h, c = carry
            h, c = cell(jnp.concatenate([x, h], axis=-1) @ w + b, c)
            return (h, c), h

        return lax.scan(body, (h0, h0), xs_TB, unroll=unroll)[1]
    if form == "transposed":  # state [H, B]; gates are row blocks
        w_x_t, w_h_t, b_t = w_x.T, w_h.T, b[:, None]

        def body(carry, x):
            h, c = carry
            z = w_x_t @ x.T + w_h_t @ h + b_t
            i, f, g, o = (z[k * hidden:(k + 1) * hidden] for k in range(4))
            c = sig(f) * c + sig(i) * jnp.tanh(g)
            h = sig(o) * jnp.tanh(c)
            return (h, c), h

        return jnp.swapaxes(lax.scan(body, (h0.T, h0.T), xs_TB, unroll=unroll)[1], 1, 2)
    if form == "plain":
        def body(carry, x):
            h, c = carry
            h, c = cell(x @ w_x + h @ w_h + b, c)
            return (h, c), h

        return lax.scan(body, (h0, h0), xs_TB, unroll=unroll)[1]
    raise ValueError(form)


def _batch_major_loop(params, xs_BT, *, transpose_first: bool):
    """One matmul of `[x_t, h]` per step, outputs written into `[B, T, H]` in the loop (as the fast path);
    `x_t` comes from `xs` transposed to `[T, B, F]` first, or is read from `[B, T, F]` in the loop."""
    w = jnp.concatenate([params["w_x"], params["w_h"]], axis=0)
    b, hidden = params["b"], params["w_h"].shape[0]
    batch, time = xs_BT.shape[:2]
    zeros = jnp.zeros((batch, hidden), w.dtype)

    def body(state, x_t):
        h, c, ys, t = state
        if x_t is None:
            x_t = lax.dynamic_index_in_dim(xs_BT, t, axis=1, keepdims=False)
        h, c = _lstm_gates(jnp.concatenate([x_t, h], axis=-1) @ w + b, c)
        return (h, c, lax.dynamic_update_slice_in_dim(ys, h[:, None], t, axis=1), t + 1), None

    state = (zeros, zeros, jnp.zeros((batch, time, hidden), w.dtype), jnp.int32(0))
    if transpose_first:
        return lax.scan(body, state, jnp.swapaxes(xs_BT, 0, 1))[0][2]
    return lax.scan(body, state, None, length=time)[0][2]


def _other_matmuls(plan) -> str:
    """The attempt's label for the step matmuls the plan does not use."""
    return ("two matmuls per step instead of one of [x_t, h]" if plan.fuse_xh
            else "one matmul of [x_t, h] per step instead of two")


def forward_variants(problem):
    """name -> zero-arg callable giving ys [B, T, H] (all jitted)."""
    cell = sj.lstm(problem.config.hidden)
    params = {k: jnp.asarray(v) for k, v in problem.layer.items()}
    xs = jnp.asarray(problem.xs)
    batch = problem.config.batch
    out = {}

    def via_scan(cell_, plan=None):
        fn = jax.jit(lambda p, x: sj.scan(cell_, p, cell_.initial_carry(batch), x)[1])
        if plan is None:
            return lambda: fn(params, xs)
        with _plan(plan):
            fn.lower(params, xs)  # trace under the plan; the jit cache keeps that trace
            compiled = fn.lower(params, xs).compile()
        return lambda: compiled(params, xs)

    kept = plan_for(batch, problem.config.time, problem.config.features, problem.config.hidden, "lstm")
    out["reference loop (scan over step)"] = via_scan(cell._replace(sequence=None))
    out[f"fast path, kept plan ({_describe(kept)})"] = via_scan(cell, kept)
    out[f"  ... {_other_matmuls(kept)}"] = via_scan(cell, kept._replace(fuse_xh=not kept.fuse_xh))
    out["  ... outputs time-major, transposed after"] = via_scan(cell, kept._replace(batch_major=False))
    for u in (2, 4, 8):
        out[f"  ... unroll {u}"] = via_scan(cell, kept._replace(unroll=u))
    out["  ... input projection hoisted (per-gate [T,B,H] arrays)"] = via_scan(cell, kept._replace(hoist=True))
    labels = {"hoist_one_buffer": "input projection hoisted into one [T,B,4H] buffer",
              "hoist_per_gate": "input projection hoisted, per-gate [T,B,H] arrays",
              "concat_xh": "one matmul of [x_t, h]", "transposed": "state [H, B] (gates are row blocks)"}
    for form, label in labels.items():
        fn = jax.jit(lambda p, x, form=form: jnp.swapaxes(_custom_loop(p, jnp.swapaxes(x, 0, 1), form=form), 0, 1))
        out[f"hand-written loop: {label}"] = lambda fn=fn: fn(params, xs)
    fn = jax.jit(lambda p, x: jnp.swapaxes(_custom_loop(p, jnp.swapaxes(x, 0, 1), form="plain", sig=_sig_tanh), 0, 1))
    out["hand-written loop: sigmoid as 0.5 tanh(x/2) + 0.5"] = lambda: fn(params, xs)
    for first, label in ((True, "xs transposed to [T, B, F] first"), (False, "x_t read from [B, T, F] in the loop")):
        fn = jax.jit(lambda p, x, first=first: _batch_major_loop(p, x, transpose_first=first))
        out[f"hand-written loop, outputs batch-major: {label}"] = lambda fn=fn: fn(params, xs)
    half = batch // 2
    fn = jax.jit(lambda p, x: jnp.concatenate([_batch_major_loop(p, x[:half], transpose_first=True),
                                               _batch_major_loop(p, x[half:], transpose_first=True)], axis=0))
    out["the same, two independent loops over the batch's halves"] = lambda: fn(params, xs)
    return out


def _lanes_loop(params, xs_BT, lanes: int, *, recurrence_only: bool = False):
    """The batch as `lanes` independent slices inside one loop body (`_batch_major_loop` per lane, each
    lane with its own output buffer, concatenated after): a step is then `lanes` independent chains of
    operations. XLA:CPU's thunk executor runs a loop body's operations in order unless more than 8 are
    ready at once (its split threshold), so from 9-10 lanes it hands half of them to the second core.
    `recurrence_only`: no input and no outputs, only `h, c` through the step (the final `h` returned)."""
    w = jnp.concatenate([params["w_x"], params["w_h"]], axis=0)
    w_h, b, hidden = params["w_h"], params["b"], params["w_h"].shape[0]
    batch, time = xs_BT.shape[:2]
    sizes = [len(r) for r in np.array_split(np.arange(batch), lanes)]
    starts = np.cumsum([0] + sizes)[:-1]

    def step(h, c, x_t):
        return _lstm_gates((h @ w_h if x_t is None else jnp.concatenate([x_t, h], axis=-1) @ w) + b, c)

    xs_TB = jnp.swapaxes(xs_BT, 0, 1)
    x_lanes = tuple(xs_TB[:, s:s + n] for s, n in zip(starts, sizes))
    hc = tuple((jnp.zeros((n, hidden), w.dtype),) * 2 for n in sizes)
    if recurrence_only:
        def body(hc, _):
            return tuple(step(h, c, None) for h, c in hc), None

        return jnp.concatenate([h for h, _ in lax.scan(body, hc, None, length=time)[0]], axis=0)

    def body(state, x_ts):
        hc, ys, t = state
        hc = tuple(step(h, c, x_t) for (h, c), x_t in zip(hc, x_ts))
        ys = tuple(lax.dynamic_update_slice_in_dim(y, h[:, None], t, axis=1) for y, (h, _) in zip(ys, hc))
        return (hc, ys, t + 1), None

    ys = tuple(jnp.zeros((n, time, hidden), w.dtype) for n in sizes)
    return jnp.concatenate(lax.scan(body, (hc, ys, jnp.int32(0)), x_lanes)[0][1], axis=0)


def lanes_variants(problem, counts=(1, 2, 8, 12, 16, 24)):
    """The hand-written batch-major LSTM forward with the batch in independent lanes inside the step
    (`_lanes_loop`), then the bare recurrence alone; process CPU time above wall time shows both cores."""
    params = {k: jnp.asarray(v) for k, v in problem.layer.items()}
    xs = jnp.asarray(problem.xs)
    counts = [n for n in counts if n <= problem.config.batch]
    out = {}
    for n in counts:
        fn = jax.jit(lambda p, x, n=n: _lanes_loop(p, x, n))
        out[f"forward, {n} lane{'s' if n > 1 else ''}"] = lambda fn=fn: fn(params, xs)
    for n in counts:
        fn = jax.jit(lambda p, x, n=n: _lanes_loop(p, x, n, recurrence_only=True))
        out[f"recurrence only, {n} lane{'s' if n > 1 else ''}"] = lambda fn=fn: fn(params, xs)
    return out


def _gate_blocks_backward(backward, count: int):
    """A cell's backward step giving its pre-activation gradients `dzx`, `dzh` as their `count` gate
    blocks (`[B, H]` each) instead of one `[B, count H]` array: the engine then multiplies block by block
    (`count` `[B, H] @ [H, H]` matmuls per step instead of one) and concatenates the blocks after the loop
    for the weight gradients. XLA folds the slices of the concatenation away, so only the matmuls differ."""

    def split(w, carry_prev, carry_new, res, d_carry):
        dh, d_rest, dzx, dzh = backward(w, carry_prev, carry_new, res, d_carry)
        hidden = carry_prev[0].shape[-1]
        dzx_blocks = fast_common.blocks(dzx, hidden, count)
        return dh, d_rest, dzx_blocks, dzx_blocks if dzh is dzx else fast_common.blocks(dzh, hidden, count)

    return split


_per_gate_backward = _gate_blocks_backward(fast_lstm.LSTM.backward, 4)
_gru_per_gate_backward = _gate_blocks_backward(fast_gru.GRU.backward, 3)


def _with_backward(cell: str, hidden: int, backward):
    """`sj.lstm(hidden)` or `sj.gru(hidden)` (`cell`: "lstm", "gru") whose fast path runs `backward` as
    its backward step (the cell captures its `Gated` maths when built)."""
    module = {"lstm": fast_lstm, "gru": fast_gru}[cell]
    name = cell.upper()
    kept = getattr(module, name)
    setattr(module, name, kept._replace(backward=backward))
    try:
        return getattr(sj, cell)(hidden)
    finally:
        setattr(module, name, kept)


def _cell_data(cfg, cell_name):
    """(model `chain(cell, dense)`, bare cell, params (layer, head), xs, targets) of the bench's problem."""
    make = {"LSTM": sj.lstm, "GRU": sj.gru}[cell_name]
    problem = problems.make_problem(cfg, cell_name.lower())
    params = ({k: jnp.asarray(v) for k, v in problem.layer.items()},
              {k: jnp.asarray(v) for k, v in problem.head.items()})
    return (sj.chain(make(cfg.hidden), sj.dense(cfg.features)), make(cfg.hidden), params,
            jnp.asarray(problem.xs), jnp.asarray(problem.targets))


def _flat(params, state=None):
    """All of `params`' leaves as one vector (a variant's checked output; `state` is ignored, so this
    can also finish a `_shard_map_step`)."""
    return jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(params)])


def _compiled_flat_step(model, optimizer, params, state, xs, targets, plan=None):
    """A zero-arg callable running the bench's Adam step of `model`'s MSE (compiled under `plan`, or the
    plan `plan_for` picks) and returning the updated parameters, flattened."""
    from benchmarks.seqjax_tasks import train_step_fn

    with _plan(plan) if plan is not None else contextlib.nullcontext():
        step = train_step_fn(model, optimizer)
        compiled = jax.jit(lambda *a: _flat(step(*a)[0])).lower(params, state, xs, targets).compile()
    return lambda: compiled(params, state, xs, targets)


def gru_train_variants(problem):
    """GRU train step (the bench's `chain(gru, dense)` + MSE + Adam): the kept backward step (gate
    gradients concatenated in the step, one matmul) against one matmul per gate block; each twice, so
    the spread between identical contenders shows. Returns the updated parameters, flattened."""
    cfg = problem.config
    _, _, params, xs, targets = _cell_data(cfg, "GRU")
    optimizer = optax.adam(1e-3)
    state = optimizer.init(params)

    def variant(cell):
        return _compiled_flat_step(sj.chain(cell, sj.dense(cfg.features)), optimizer, params, state, xs, targets)

    cells = {"kept: gate blocks concatenated in the step, one matmul": sj.gru(cfg.hidden),
             "a matmul per gate block": _with_backward("gru", cfg.hidden, _gru_per_gate_backward)}
    return {f"{name} ({copy})": variant(cell) for copy in ("A", "B") for name, cell in cells.items()}


def chunk_variants(problem):
    """LSTM and GRU train step (the bench's `chain(cell, dense)` + MSE + Adam), the forward recomputed in
    the backward pass in chunks of `chunk_steps` (~√T) steps against chunks of one step (the plan from a
    batch of 64); each twice, so the spread between identical contenders shows. Returns the updated
    parameters, flattened."""
    cfg = problem.config
    optimizer = optax.adam(1e-3)
    out = {}
    for cell_name in ("LSTM", "GRU"):
        model, _, params, xs, targets = _cell_data(cfg, cell_name)
        state = optimizer.init(params)
        steps = chunk_steps(cfg.batch, cfg.time, cfg.features, cfg.hidden, cell_name.lower())
        for copy in ("A", "B"):
            for k in (steps, 1):
                out[f"{cell_name}, forward recomputed in chunks of {k} ({copy})"] = _compiled_flat_step(
                    model, optimizer, params, state, xs, targets, Plan(chunk=k, recompute=True, fuse_xh=True))
    return out


def head_variants(problem):
    """`sj.scan` of the bench's `chain(cell, dense)` evaluated (all outputs, no gradient): the dense part
    run inside the recurrent loop as its head (what `chain` does), layer by layer (the dense over the
    layer's `[T, B, H]` outputs; the dense's sequence without its `pointwise` mark), and the reference loop
    over `chain.step`. LSTM and GRU. Returns the outputs."""
    cfg = problem.config
    out = {}
    for cell_name in ("LSTM", "GRU"):
        model, cell, params, xs, _ = _cell_data(cfg, cell_name)
        dense = sj.dense(cfg.features)
        layered = sj.chain(cell, dense._replace(sequence=lambda *a, **k: dense.sequence(*a, **k)))
        for label, m in (("head in the loop", model), ("layer by layer", layered),
                         ("reference loop", model._replace(sequence=None))):
            fn = jax.jit(lambda p, xs, m=m: sj.scan(m, p, m.initial_carry(cfg.batch), xs)[1])
            out[f"{cell_name}, {label}"] = lambda fn=fn, params=params, xs=xs: fn(params, xs)
    return out


def native_variants(problem):
    """`sj.scan` of the bench's LSTM and GRU layers and of `chain(cell, dense)`, evaluated: the engine's forward
    loop against the native CPU kernels (`seqjax.fast.native`) on all cores and on one. Returns the outputs."""
    cfg = problem.config
    out = {}
    for cell_name in ("LSTM", "GRU"):
        model, cell, params, xs, _ = _cell_data(cfg, cell_name)
        base = plan_for(cfg.batch, cfg.time, cfg.features, cfg.hidden, cell_name.lower())._replace(
            native=False, native_head=False)
        for what, m, p in (("layer", cell, params[0]), (f"chain({cell_name.lower()}, dense)", model, params)):
            on_kernel = base._replace(native=True, native_head=True)
            for label, plan in (("engine", base), ("native kernel", on_kernel._replace(native_eval_threads=0)),
                                ("native kernel, one thread", on_kernel._replace(native_eval_threads=1))):
                with _plan(plan):
                    fn = jax.jit(lambda p, xs, m=m: sj.scan(m, p, m.initial_carry(cfg.batch), xs)[1])
                    fn = fn.lower(p, xs).compile()  # traced under the plan
                out[f"{cell_name} {what}, {label}"] = lambda fn=fn, p=p, xs=xs: fn(p, xs)
    return out


def native_train_variants(problem, cells=("LSTM", "GRU")):
    """Train step (the bench's `chain(cell, dense)` + MSE + Adam), LSTM and GRU: the engine's forward and
    backward passes (the plan `plan_for` picks, kernels off) against the native CPU kernels'
    (`seqjax.fast.native`); each twice, so the spread between identical contenders shows. Returns the updated
    parameters, flattened (the two differ in float32 rounding only)."""

    def plans(base):
        out = {"engine": base._replace(native_train=False, use_reference=False),
               "native kernels": base._replace(native_train=True)}
        if base.use_reference:
            out["reference loop"] = Plan(use_reference=True)
        return out

    return _train_step_variants(problem, cells, plans)


def train_head_variants(problem, cells=("LSTM", "GRU")):
    """Train step as in `native_train_variants`, on the native kernels: the dense head inside them
    (`Plan.native_train_head`) against the head over all steps in XLA; each twice."""
    return _train_step_variants(problem, cells, lambda base: {
        "head inside the kernels": base._replace(native_train=True, native_train_head=True),
        "head in XLA": base._replace(native_train=True, native_train_head=False)})


def _train_step_variants(problem, cells, plans_of):
    """The bench's train step of each cell under each plan `plans_of(the plan plan_for picks)` gives, twice."""
    cfg = problem.config
    optimizer = optax.adam(1e-3)
    out = {}
    for cell_name in cells:
        model, _, params, xs, targets = _cell_data(cfg, cell_name)
        state = optimizer.init(params)
        plans = plans_of(plan_for(cfg.batch, cfg.time, cfg.features, cfg.hidden, cell_name.lower()))
        for copy in ("A", "B"):
            for label, plan in plans.items():
                out[f"{cell_name}, {label} ({copy})"] = _compiled_flat_step(model, optimizer, params, state, xs,
                                                                           targets, plan)
    return out


@contextlib.contextmanager
def _stack_kernel_always():
    """The stacked closed-loop kernel at every size (the plan keeps it below `_NATIVE_STACK_LAYER_MACS` a
    layer's step), on the cores the plan would give it."""
    old = plan_module._NATIVE_STACK_LAYER_MACS
    plan_module._NATIVE_STACK_LAYER_MACS = float("inf")
    try:
        yield
    finally:
        plan_module._NATIVE_STACK_LAYER_MACS = old


def _flax_closed_loop(model, params, carry, x0, steps: int):
    """The closed loop of `model = chain(cell, .., cell, dense)` in Flax linen: its cells
    (`nn.OptimizedLSTMCell`, `nn.GRUCell`) and `nn.Dense` in one `lax.scan`, the output fed back, jitted, from
    `x0` on the params and carry `sj.interop.to_flax` / `carry_to_flax` map (once). Returns a zero-argument
    callable giving the outputs `[B, steps, F]`."""
    import flax.linen as nn

    parts = model.config["parts"]
    cells = [(nn.OptimizedLSTMCell if part.name == "lstm" else nn.GRUCell)(p["w_h"].shape[0])
             for part, p in zip(parts[:-1], params[:-1])]
    dense = nn.Dense(params[-1]["w"].shape[1])

    @jax.jit
    def run(trees, carries, x0):
        def body(state, _):
            carries, x = state
            new = []
            for cell, tree, carry in zip(cells, trees, carries):
                carry, x = cell.apply({"params": tree}, carry, x)
                new.append(carry)
            y = dense.apply({"params": trees[-1]}, x)
            return (tuple(new), y), y

        _, ys = lax.scan(body, (tuple(carries[:-1]), x0), None, length=steps)
        return jnp.swapaxes(ys, 0, 1)

    trees, carries = sj.interop.to_flax(params, model), sj.interop.carry_to_flax(carry, model)
    return lambda: run(trees, carries, x0)


def stack_closed_loop_variants(problem, layers=(2, 3)):
    """`sj.rollout` of `chain(cell, .., cell, dense)` (two and three LSTM or GRU layers of the config's hidden
    size) from a random carry, the config's closed-loop steps: the stacked closed-loop kernel
    (`seqjax.fast.native.stack_closed_loop`, also where the plan gives the loop over `step` instead) against
    the loop over `step` and the same closed loop in Flax linen (`_flax_closed_loop`). Returns the outputs."""
    cfg = problem.config
    x0 = jnp.asarray(problem.context[:, -1])
    out = {}
    for cell_name, make in (("LSTM", sj.lstm), ("GRU", sj.gru)):
        for n in layers:
            model = sj.chain(*(make(cfg.hidden) for _ in range(n)), sj.dense(cfg.features))
            params = model.init(jax.random.key(n), cfg.features)
            carry = jax.tree.map(lambda a: 0.1 * jnp.ones_like(a), model.initial_carry(cfg.batch))
            steps = sj.chain(*(part._replace(sequence=None) for part in model.config["parts"]))
            for label, m in (("stacked closed-loop kernel", model), ("loop over `step`", steps)):
                with _stack_kernel_always():
                    fn = jax.jit(lambda p, c, x, m=m: sj.rollout(m, p, c, x, problem.closed_loop)[1])
                    fn = fn.lower(params, carry, x0).compile()  # traced with the kernel at every size
                out[f"{cell_name} x{n}, {label}"] = lambda fn=fn, p=params, c=carry: fn(p, c, x0)
            out[f"{cell_name} x{n}, Flax linen (cells and dense in a lax.scan)"] = _flax_closed_loop(
                model, params, carry, x0, problem.closed_loop)
    return out


def blas_variants(problem, steps: int = 200):
    """The per-step matmuls of an LSTM layer (forward `[B, F + H] @ [F + H, 4H]`, backward
    `[B, 4H] @ [4H, H]`), `steps` of them in a chain (each step's input depends on the previous product), by
    XLA in a `lax.scan`, by NumPy's BLAS and by `torch.matmul` (when installed) in a Python loop: what a
    custom-call step kernel built on those libraries would start from. Returns the final input."""
    try:
        import torch
    except ImportError:
        torch = None
    cfg = problem.config
    rng = np.random.default_rng(0)
    shapes = {"forward": (cfg.batch, cfg.features + cfg.hidden, 4 * cfg.hidden),
              "backward": (cfg.batch, 4 * cfg.hidden, cfg.hidden)}
    out = {}
    for part, (b, k, n) in shapes.items():
        a0 = rng.normal(size=(b, k)).astype(np.float32)
        w = (rng.normal(size=(k, n)) / np.sqrt(k)).astype(np.float32)
        label = f"{part} [{b}, {k}] @ [{k}, {n}]"

        @jax.jit
        def xla(a, w):
            return lax.scan(lambda c, _: (c + 1e-3 * (c @ w)[:, :1], None), a, None, length=steps)[0]

        def numpy_loop(a0=a0, w=w, b=b, n=n):
            c, y = a0.copy(), np.empty((b, n), np.float32)
            for _ in range(steps):
                np.matmul(c, w, out=y)
                c += 1e-3 * y[:, :1]
            return c

        out[f"{label}, XLA (lax.scan)"] = lambda a=jnp.asarray(a0), w=jnp.asarray(w), xla=xla: xla(a, w)
        out[f"{label}, NumPy matmul ({np.__name__} BLAS)"] = numpy_loop
        if torch is None:
            continue

        def torch_loop(a0=torch.from_numpy(a0), w=torch.from_numpy(w), b=b, n=n):
            c, y = a0.clone(), torch.empty((b, n))
            for _ in range(steps):
                torch.matmul(c, w, out=y)
                c += 1e-3 * y[:, :1]
            return c.numpy()

        out[f"{label}, torch.matmul ({torch.get_num_threads()} threads)"] = torch_loop
    return out


def train_variants(problem):
    """name -> zero-arg callable doing one jitted Adam step of chain(lstm, dense) with MSE."""
    from benchmarks.seqjax_tasks import train_step_fn

    cfg = problem.config
    params = ({k: jnp.asarray(v) for k, v in problem.layer.items()},
              {k: jnp.asarray(v) for k, v in problem.head.items()})
    xs, targets = jnp.asarray(problem.xs), jnp.asarray(problem.targets)
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)
    out = {}

    def variant(cell, plan=None, remat=None):
        step = train_step_fn(sj.chain(cell, sj.dense(cfg.features)), optimizer, remat=remat)
        with _plan(plan) if plan is not None else contextlib.nullcontext():
            compiled = step.lower(params, opt_state, xs, targets).compile()
        return lambda: compiled(params, opt_state, xs, targets)

    cell = sj.lstm(cfg.hidden)
    kept = plan_for(cfg.batch, cfg.time, cfg.features, cfg.hidden, "lstm")
    out["reference loop, JAX's scan VJP"] = variant(cell._replace(sequence=None))
    out[f"fast path, kept plan ({_describe(kept)})"] = variant(cell, kept)
    out["  ... JAX's scan VJP of the fast forward (no custom VJP)"] = variant(cell, kept._replace(custom_vjp=False))
    out["  ... all residuals kept, backward in one stretch"] = variant(cell, kept._replace(chunk=0, recompute=False))
    for k in (5, 10, 20):
        out[f"  ... residuals kept, backward in chunks of {k}"] = variant(cell, kept._replace(chunk=k, recompute=False))
    for k in (5, 10, 20):
        out[f"  ... forward recomputed in chunks of {k}"] = variant(cell, kept._replace(chunk=k, recompute=True))
    out[f"  ... {_other_matmuls(kept)}"] = variant(cell, kept._replace(fuse_xh=not kept.fuse_xh))
    for u in (2, 4):
        out[f"  ... unroll {u}"] = variant(cell, kept._replace(unroll=u))
    out["  ... input projection hoisted"] = variant(cell, kept._replace(hoist=True))
    out["  ... backward: a matmul per gate block, not one of the concatenated dz"] = variant(
        _with_backward("lstm", cfg.hidden, _per_gate_backward), kept)
    remat = max(1, int(cfg.time ** 0.5))
    out[f"  ... and sj.scan(remat={remat}) around it"] = variant(cell, remat=remat)
    return out


def _rollout_problem(problem):
    """`(model, params, context)` of the bench's LSTM rollout: `chain(lstm, dense)`, its params as JAX arrays."""
    cfg = problem.config
    params = ({k: jnp.asarray(v) for k, v in problem.layer.items()},
              {k: jnp.asarray(v) for k, v in problem.head.items()})
    return sj.chain(sj.lstm(cfg.hidden), sj.dense(cfg.features)), params, jnp.asarray(problem.context)


def _readme_rollout(model, params, context, steps: int):
    """The README's forecast: `sj.scan` over the context, then `steps` steps of `sj.rollout` from its last
    output; returns the closed loop's outputs."""
    carry, ys = sj.scan(model, params, model.initial_carry(context.shape[0]), context)
    return sj.rollout(model, params, carry, ys[:, -1], steps)[1]


def rollout_variants(problem):
    """name -> zero-arg callable: warm-up on the context, then closed-loop steps, jitted."""
    model, params, context = _rollout_problem(problem)
    steps = problem.closed_loop
    out = {}

    def readme(model):
        predict = jax.jit(lambda params, context: _readme_rollout(model, params, context, steps))
        return lambda: predict(params, context)

    out["sj.scan + sj.rollout (kept)"] = readme(model)
    # the same model without `step.closed_loop`: `sj.rollout` steps through `step` (one lax.scan)
    out["  ... the closed loop over `step`, not the closed-loop kernel"] = readme(
        model._replace(step=lambda *args, **kwargs: model.step(*args, **kwargs)))
    for u in (2, 4, 8):
        @jax.jit
        def unrolled(params, context, u=u):
            carry, ys = sj.scan(model, params, model.initial_carry(context.shape[0]), context)

            def body(state, _):
                carry, x = state
                carry, y = model.step(params, carry, x)
                return (carry, y), y

            return jnp.swapaxes(lax.scan(body, (carry, ys[:, -1]), None, length=steps, unroll=u)[1], 0, 1)

        out[f"closed loop unroll {u}"] = lambda f=unrolled: f(params, context)

    @jax.jit
    def folded(params, context):
        """Closed loop with the head folded into the input projection: one matmul per step."""
        (p_l, p_d) = params
        carry, ys = sj.scan(model, params, model.initial_carry(context.shape[0]), context)
        (h, c), _ = carry
        w = p_l["w_h"] + p_d["w"] @ p_l["w_x"]
        b = p_l["b"] + p_d["b"] @ p_l["w_x"]
        y0 = ys[:, -1]
        z0 = y0 @ p_l["w_x"] + h @ p_l["w_h"] + p_l["b"]

        def body(carry, _):
            h, c = _lstm_gates(*carry)
            return (h @ w + b, c), h

        _, hs = lax.scan(body, (z0, c), None, length=steps)
        return jnp.swapaxes(hs @ p_d["w"] + p_d["b"], 0, 1)

    out["closed loop, head folded into the input matmul"] = lambda: folded(params, context)
    return out


def strassen_variants(problem):
    """The bench's LSTM rollout (`sj.scan` warm-up, then `sj.rollout` of `chain(lstm, dense)`, as the README
    teaches) with the kernels' steps by Strassen's product (`Plan.native_strassen`) and by the plain one, and the
    closed-loop kernel call alone the same two ways (the rollout's closed-loop steps from the context's last input
    and a zero carry); each twice so the spread between identical contenders shows. Returns the closed-loop
    outputs."""
    model, params, context = _rollout_problem(problem)
    steps, zeros = problem.closed_loop, jnp.zeros((problem.config.batch, problem.config.hidden), jnp.float32)
    out = {}
    for copy in ("A", "B"):
        for label, strassen in (("Strassen's product", True), ("plain product", False)):
            with _plan_fields(native_strassen=strassen):
                # a new function each time (JAX reuses a function's trace), traced under the plan
                fn = jax.jit(lambda p, c: _readme_rollout(model, p, c, steps)).lower(params, context).compile()
            out[f"rollout, {label} ({copy})"] = lambda fn=fn: fn(params, context)
            kernel = jax.jit(lambda p, d, x0, s=strassen: native.lstm_closed_loop(
                p["w_x"], p["w_h"], p["b"], zeros, zeros, x0, d["w"], d["b"], steps, strassen=s)[1])
            out[f"closed-loop kernel alone, {label} ({copy})"] = lambda k=kernel: k(*params, context[:, -1])
    return out


def overlap_variants(problem):
    """A recomputed forward loop and a backward loop over the whole sequence: as two loops, or as one loop
    doing a step of each per iteration (the two are independent, as the recomputation of chunk `j - 1`
    and the backward pass of chunk `j` are: could XLA:CPU overlap them?). Returns the final carries."""
    cfg = problem.config
    hidden = cfg.hidden
    params = {k: jnp.asarray(v) for k, v in problem.layer.items()}
    w_xh = jnp.concatenate([params["w_x"], params["w_h"]], axis=0)
    w_h_t, b = params["w_h"].T, params["b"]
    xs_TB = jnp.swapaxes(jnp.asarray(problem.xs), 0, 1)
    zeros = jnp.zeros((cfg.batch, hidden), w_xh.dtype)

    def forward_step(carry, x):
        h, c = carry
        z = jnp.concatenate([x, h], axis=-1) @ w_xh + b
        i, f, g, o = (z[:, k * hidden:(k + 1) * hidden] for k in range(4))
        i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
        c = f * c + i * g
        return (o * jnp.tanh(c), c), (i, f, g, o, c)

    def backward_step(d_carry, res):
        dh, dc = d_carry
        i, f, g, o, c, c_prev = res
        tc = jnp.tanh(c)
        dc = dc + dh * o * (1 - tc * tc)
        dz = jnp.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                              dh * tc * o * (1 - o)], axis=-1)
        return (dz @ w_h_t, dc * f), None

    _, kept = jax.jit(lambda xs: lax.scan(forward_step, (zeros, zeros), xs))(xs_TB)
    residuals = kept + (jnp.concatenate([zeros[None], kept[4][:-1]], axis=0),)

    @jax.jit
    def two_loops(xs, res):
        (h, _), _ = lax.scan(forward_step, (zeros, zeros), xs)
        (dh, _), _ = lax.scan(backward_step, (zeros + 1, zeros), res, reverse=True)
        return jnp.concatenate([h, dh], axis=-1)

    @jax.jit
    def one_loop(xs, res):
        def body(state, inputs):
            fwd, bwd = state
            x, r = inputs
            fwd, _ = forward_step(fwd, x)
            bwd, _ = backward_step(bwd, r)
            return (fwd, bwd), None

        ((h, _), (dh, _)), _ = lax.scan(body, ((zeros, zeros), (zeros + 1, zeros)),
                                        (xs, jax.tree.map(lambda a: a[::-1], res)))
        return jnp.concatenate([h, dh], axis=-1)

    return {"forward loop, then backward loop": lambda: two_loops(xs_TB, residuals),
            "one loop: a forward step and a backward step per iteration": lambda: one_loop(xs_TB, residuals)}


def gru_forward_variants(problem):
    """GRU forward: the fast path (`x_t w_x` and `h w_h`, two matmuls per step) against one matmul of
    `[x_t, h]` with four blocks of columns (`z`, `r` summed; `n`'s input and recurrent parts apart)."""
    _, cell, (params, _), xs, _ = _cell_data(problem.config, "GRU")
    batch, hidden = problem.config.batch, problem.config.hidden

    def one_matmul(p, xs_BT):
        w_x, w_h, b_x, b_h = p["w_x"], p["w_h"], p["b_x"], p["b_h"]
        blank = jnp.zeros_like(w_x[:, :hidden])
        w = jnp.concatenate([jnp.concatenate([w_x[:, :2 * hidden], w_x[:, 2 * hidden:], blank], axis=1),
                             jnp.concatenate([w_h[:, :2 * hidden], jnp.zeros_like(w_h[:, :hidden]),
                                              w_h[:, 2 * hidden:]], axis=1)], axis=0)
        b = jnp.concatenate([b_x[:2 * hidden] + b_h[:2 * hidden], b_x[2 * hidden:], b_h[2 * hidden:]])

        def body(h, x):
            a = jnp.concatenate([x, h], axis=-1) @ w + b
            z, r = jax.nn.sigmoid(a[:, :hidden]), jax.nn.sigmoid(a[:, hidden:2 * hidden])
            n = jnp.tanh(a[:, 2 * hidden:3 * hidden] + r * a[:, 3 * hidden:])
            h = z * h + (1 - z) * n
            return h, h

        h0 = jnp.zeros((batch, hidden), w.dtype)
        return jnp.swapaxes(lax.scan(body, h0, jnp.swapaxes(xs_BT, 0, 1))[1], 0, 1)

    fast = jax.jit(lambda p, x: sj.scan(cell, p, cell.initial_carry(batch), x)[1])
    fused = jax.jit(one_matmul)
    return {"fast path (two matmuls per step)": lambda: fast(params, xs),
            "one matmul of [x_t, h], four column blocks": lambda: fused(params, xs)}


def _cpu_mesh(where: str):
    """A one-axis ("batch") mesh over the process's CPU devices (2+ needed: `jax_num_cpu_devices`)."""
    from jax.sharding import Mesh

    devices = jax.devices("cpu")
    if len(devices) < 2:
        raise ValueError(f"{where}: needs 2+ CPU devices (jax_num_cpu_devices); got {devices}")
    return Mesh(np.array(devices), ("batch",))


def _shard_map_step(model, optimizer, mesh, finish):
    """The Adam step of `model`'s MSE with the batch split over `mesh`: each device takes the gradients of
    its part, `pmean` averages them, every device applies the same update. Jitted
    `step(params, state, xs, targets) -> finish(params, state)` (replicated)."""
    from jax.sharding import PartitionSpec

    from benchmarks.seqjax_tasks import mse_loss

    whole, split = PartitionSpec(), PartitionSpec("batch")

    def local_step(params, state, xs, targets):
        grads = jax.lax.pmean(jax.grad(lambda p: mse_loss(model, p, xs, targets))(params), "batch")
        updates, state = optimizer.update(grads, state, params)
        return finish(optax.apply_updates(params, updates), state)

    return jax.jit(jax.shard_map(local_step, mesh=mesh, in_specs=(whole, whole, split, split), out_specs=whole,
                                 check_vma=False))


def devices_variants(problem):
    """LSTM and GRU forward and train step on one CPU device, and with the batch split over the process's
    CPU devices (`jax.config.update("jax_num_cpu_devices", n)` before JAX starts: `main` does this for
    this group): params replicated, `xs` and targets sharded on the batch, and either XLA's partitioner
    does the rest (`jit`) or each device runs the step on its part and the gradients are averaged once
    (`shard_map` + `pmean`). Each variant returns the outputs (forward) or the updated parameters,
    flattened (train)."""
    from jax.sharding import NamedSharding, PartitionSpec

    from benchmarks.seqjax_tasks import train_step_fn

    cfg = problem.config
    mesh = _cpu_mesh("benchmarks.attempts devices")
    whole, split = PartitionSpec(), PartitionSpec("batch")
    optimizer = optax.adam(1e-3)

    def put(tree, spec):
        return jax.device_put(tree, NamedSharding(mesh, spec))

    def waited(fn, *args):
        # Each call waits for its result: without that, multi-device calls deadlocked on this 2-vCPU
        # machine (`devices_loop`; BENCHMARKS.md, "Both cores").
        return lambda: jax.block_until_ready(fn(*args))

    out = {}
    for cell_name in ("LSTM", "GRU"):
        model, cell, params, xs, targets = _cell_data(cfg, cell_name)
        state = optimizer.init(params)
        forward = jax.jit(lambda p, x, cell=cell: sj.scan(cell, p, cell.initial_carry(x.shape[0]), x)[1])
        step = train_step_fn(model, optimizer)
        flat_step = jax.jit(lambda *a, step=step: _flat(step(*a)[0]))
        on_devices = f"batch over {len(mesh.devices)} CPU devices"
        data = (put(params, whole), put(state, whole), put(xs, split), put(targets, split))
        out[f"{cell_name} forward, one device"] = waited(forward, params[0], xs)
        out[f"{cell_name} forward, {on_devices}"] = waited(forward, data[0][0], data[2])
        out[f"{cell_name} train step, one device"] = waited(flat_step, params, state, xs, targets)
        out[f"{cell_name} train step, {on_devices}, jit partitions"] = waited(flat_step, *data)
        out[f"{cell_name} train step, {on_devices}, shard_map + one pmean"] = waited(
            _shard_map_step(model, optimizer, mesh, _flat), *data)
    return out


def devices_loop(config, cell_name: str, steps: int, wait: bool) -> float:
    """A training loop of the `shard_map` step over the CPU devices, `params, state = step(params, state,
    xs, targets)` `steps` times, waiting for each step's result or not. Returns the last step's updated
    parameters' sum. Without waiting this deadlocked on the 2-vCPU machine (XLA's rendezvous timeout
    aborts the process after 40 s); `--what devices_loop --no-wait` reproduces it."""
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = _cpu_mesh("benchmarks.attempts devices_loop")
    optimizer = optax.adam(1e-3)
    model, _, params, xs, targets = _cell_data(config, cell_name)
    step = _shard_map_step(model, optimizer, mesh, lambda p, s: (p, s))
    state = optimizer.init(params)
    params, state = jax.device_put((params, state), NamedSharding(mesh, PartitionSpec()))
    xs, targets = jax.device_put((xs, targets), NamedSharding(mesh, PartitionSpec("batch")))
    for _ in range(steps):
        params, state = step(params, state, xs, targets)
        if wait:
            jax.block_until_ready(params)
    return float(sum(jnp.sum(a) for a in jax.tree.leaves(params)))


VARIANTS = {"forward": forward_variants, "train": train_variants, "rollout": rollout_variants,
            "overlap": overlap_variants, "strassen": strassen_variants, "gru_forward": gru_forward_variants,
            "gru_train": gru_train_variants,
            "chunks": chunk_variants,
            "head": head_variants,
            "native": native_variants,
            "native_train": native_train_variants,
            "stack_closed_loop": stack_closed_loop_variants,
            "train_head": train_head_variants,
            "blas": blas_variants,
            "devices": devices_variants,
            "lanes": lanes_variants}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="medium",
                        help=f"one of {list(problems.CONFIGS)}, tiny or {list(problems.GPU_CONFIGS)}")
    parser.add_argument("--what", default="forward,train,rollout",
                        help=f"comma-separated, from {list(VARIANTS) + ['devices_loop']}")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--cpu-devices", type=int, default=2, help="CPU devices for devices and devices_loop")
    parser.add_argument("--steps", type=int, default=200, help="devices_loop: training steps per cell")
    parser.add_argument("--no-wait", action="store_true", help="devices_loop: do not wait for each step")
    parser.add_argument("--out", help="also write the medians as JSON here (with the machine and versions)")
    args = parser.parse_args(argv)
    whats = args.what.split(",")
    if {"devices", "devices_loop"} & set(whats):
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)  # before JAX starts its backend
    config = {**problems.CONFIGS, **problems.QUICK_CONFIGS, **problems.GPU_CONFIGS}[args.config]
    if "devices_loop" in whats:
        for cell_name in ("LSTM", "GRU"):
            total = devices_loop(config, cell_name, args.steps, wait=not args.no_wait)
            print(f"devices_loop ({config.name}, {cell_name}): {args.steps} steps done, "
                  f"{'not ' if args.no_wait else ''}waiting for each; sum of the params {total:.6g}", flush=True)
        whats.remove("devices_loop")
    problem = problems.make_problem(config, "lstm")
    results = {}
    for what in whats:
        fns = VARIANTS[what](problem)
        first = next(iter(fns))
        if what not in ("train", "native_train", "train_head"):  # the Adam steps differ in float32 rounding only
            for name, fn in fns.items():
                ref = _reference(what, name, first, fns)
                np.testing.assert_allclose(np.asarray(fn()), np.asarray(fns[ref]()), atol=5e-4, rtol=1e-3,
                                           err_msg=f"{name} against {ref}")
        t = _measure(fns, args.rounds)
        print(f"\n{what} ({config.name}: B={config.batch} T={config.time} F={config.features} H={config.hidden})"
              "   wall ms (median) | process CPU ms (median) | speedup over the reference (wall)")
        for name, (wall, cpu) in t.items():
            print(f"  {name:72s} {wall:9.3f} | {cpu:9.3f} | {t[_reference(what, name, first, t)][0] / wall:4.2f}x")
        results[what] = t
    if args.out:
        report = {"command": "python -m benchmarks.attempts " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "config": config._asdict(), "machine": machine(), "versions": versions([]),
                  "results": {what: {name: {"median_ms": wall, "cpu_median_ms": cpu} for name, (wall, cpu) in t.items()}
                              for what, t in results.items()}}
        Path(args.out).write_text(json.dumps(report, indent=1))
    return results


def _reference(what, name, first, names):
    """The variant `name` is checked and compared against: the first of its group; in `devices`, the same
    work on one device; in `chunks`, `head`, `blas`, `lanes`, `native`, `stack_closed_loop` and `strassen`, the
    first variant of the same cell, matmul, loop, model or call."""
    if what == "devices":
        return name.split(", ")[0] + ", one device"
    if what in ("chunks", "head", "blas", "lanes", "native", "stack_closed_loop", "strassen"):
        return next(n for n in names if n.split(", ")[0] == name.split(", ")[0])
    return first


def _measure(fns, rounds, min_block_s=0.03):
    """`benchmarks.timing.measure` over the variants (rotating order, an untimed call before each block:
    at the large sizes a block is one call, and in a fixed order two identical variants measured 14%
    apart by their place). Returns name -> (median wall ms, median process CPU ms) per call."""
    contenders = [timing.Contender(name, fn, dict) for name, fn in fns.items()]
    timings = timing.measure(contenders, rounds=rounds, min_block_s=min_block_s)
    return {name: (t.median_ms, t.cpu_median_ms) for name, t in timings.items()}


if __name__ == "__main__":
    main()
