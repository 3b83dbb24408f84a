"""seqjax's numbers on the default backend (a lent GPU) against a float64 reference on the CPU, first thing.

    python3 -m benchmarks.gpu_check                  # on a GPU: configs check and gpu; elsewhere: check
    python3 -m benchmarks.gpu_check --configs tiny   # seconds, anywhere (the test suite runs it on CPU)

For the LSTM and the GRU, each as `sj.chain(layer, sj.dense(F))` the way the README teaches: the outputs of
`sj.scan`, the gradients of an MSE loss through it (layer and head), and `sj.rollout`'s closed-loop
predictions from the scanned carry. Paths: the layer as it runs by default on this backend (on a GPU, the
plan `seqjax.fast.plan.plan_for` gives it there); the same layer with bfloat16 matmuls; and for the LSTM
the cuDNN path (`seqjax.fast.cudnn.cudnn_lstm`; where JAX cannot call cuDNN, the same flat weights through
`cudnn.reference_call`, JAX's own implementation of that call, and the row says so). On a GPU the cuDNN
row also says whether the compiled program holds the `cudnn_rnn` custom call, i.e. whether cuDNN ran.

Each is compared with the same model run through the reference loop over `cell.step` in float64 on the
CPU, from the same float32 values, as ||out - ref|| / ||ref|| over all of a result's arrays. Weights,
carry and inputs are fresh random draws for every path (no zeros). float32 with `highest` matmul
precision lands near 1e-6 here, TF32 near 3e-4: the float32 tolerance sits between. A table is printed,
JSON written; the exit status is 1 if any result is over its tolerance or not finite.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import seqjax as sj
from benchmarks import problems
from benchmarks.report import machine, versions, write_json
from seqjax.fast import cudnn
from seqjax.fast.plan import plan_for

CHECK_CONFIGS = {"check": problems.Config("check", 24, 40, 12, 96), **problems.QUICK_CONFIGS,
                 **problems.GPU_CONFIGS}
ROLLOUT_STEPS = 30
FLOAT32_TOL = 3e-5  # float32 sums: ~1e-6 relative over these sizes; TF32 matmuls: ~3e-4
BF16_TOL = 3e-2  # bfloat16 operands (8 significant bits), float32 sums: 1e-3 to 1e-2
QUANTITIES = ("forward", "gradients", "rollout")
LAYERS = {"lstm": sj.lstm, "gru": sj.gru}  # `problems.CELLS` -> the layer of that kind


class Path(NamedTuple):
    """One way of running a recurrent layer: its name, the layer cell for `hidden` units, its tolerance."""

    name: str
    layer: Callable[[int], sj.Cell]
    tolerance: float


def _reference_call_layer(hidden: int) -> sj.Cell:
    """An LSTM whose `scan` runs the cuDNN path's flat weights through JAX's reference implementation of the
    call (for a backend where `jax.experimental.rnn` cannot call cuDNN)."""
    cell = sj.lstm(hidden)

    def sequence(params, carry, xs_TB, *, mask_TB=None, reset_TB=None, noise=None, **_):
        if mask_TB is not None or reset_TB is not None or noise is not None:
            raise ValueError("benchmarks.gpu_check: the reference call runs whole unmasked sequences only")
        return cudnn.layer_sequence(params, carry, xs_TB, cudnn.reference_call)

    return cell._replace(sequence=sequence)


def paths(cell: str) -> list[Path]:
    """The paths checked for `cell` ("lstm" or "gru") on this backend."""
    make = LAYERS[cell]
    out = [Path("default", make, FLOAT32_TOL),
           Path("bf16 matmuls", lambda h: make(h, matmul_dtype=jnp.bfloat16), BF16_TOL)]
    if cell == "lstm":
        if cudnn.cudnn_available():
            out.append(Path("cuDNN", lambda h: cudnn.cudnn_lstm(sj.lstm(h)), FLOAT32_TOL))
        else:
            out.append(Path("cuDNN layout, reference call (no cuDNN here)", _reference_call_layer, FLOAT32_TOL))
    return out


def _draw(config: problems.Config, cell: str, seed: int):
    """float32 NumPy params, carry, inputs and targets of `chain(cell, dense(F))` at `config`: the model's own
    initialisation plus noise (so no bias is zero), a random carry."""
    model = sj.chain(LAYERS[cell](config.hidden), sj.dense(config.features))
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda p: np.float32(np.asarray(p) + rng.normal(0, 0.05, np.shape(p))),
                          model.init(jax.random.key(seed), config.features))
    carry = jax.tree.map(lambda c: np.float32(rng.normal(0, 0.5, np.shape(c))), model.initial_carry(config.batch))
    shape = (config.batch, config.time, config.features)
    xs, targets = (np.float32(rng.normal(size=shape)) for _ in range(2))
    return params, carry, xs, targets


def _results(model: sj.Cell, params, carry, xs, targets, steps: int) -> dict:
    """forward `ys [B, T, F]`, the MSE loss's gradients (a tree like `params`) and `steps` closed-loop
    predictions `[B, steps, F]` from the scanned carry and the last output, as NumPy."""

    def loss(p):
        return jnp.mean((sj.scan(model, p, carry, xs)[1] - targets) ** 2)

    @jax.jit
    def run(params, carry, xs):
        end, ys = sj.scan(model, params, carry, xs)
        return ys, jax.grad(loss)(params), sj.rollout(model, params, end, ys[:, -1], steps)[1]

    ys, grads, rolled = run(params, carry, xs)
    return {"forward": np.asarray(ys), "gradients": jax.tree.map(np.asarray, grads), "rollout": np.asarray(rolled)}


def reference(cell: str, hidden: int, features: int, params, carry, xs, targets, steps: int) -> dict:
    """`_results` of the reference loop over `cell.step` in float64 on the CPU, from the same values."""
    layer = LAYERS[cell](hidden)._replace(sequence=None)
    model = sj.chain(layer, sj.dense(features))
    cpu = jax.devices("cpu")[0]
    with jax.enable_x64(True), jax.default_device(cpu):
        as64 = lambda tree: jax.device_put(jax.tree.map(np.float64, tree), cpu)  # noqa: E731
        return _results(model, as64(params), as64(carry), as64(xs), as64(targets), steps)


def relative_error(got, want) -> float:
    """||got - want|| / ||want|| over all arrays of two trees of the same structure (inf where a value of
    `got` is not finite)."""
    got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
    if jax.tree.structure(got) != jax.tree.structure(want):
        raise ValueError(f"benchmarks.gpu_check.relative_error: got a {jax.tree.structure(got)}, the reference "
                         f"is a {jax.tree.structure(want)}")
    g = np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in got_leaves])
    w = np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in want_leaves])
    if g.shape != w.shape:
        raise ValueError(f"benchmarks.gpu_check.relative_error: got {g.size} values against the reference's {w.size}")
    if not np.all(np.isfinite(g)):
        return float("inf")
    return float(np.linalg.norm(g - w) / np.linalg.norm(w))


def _holds_cudnn_call(model: sj.Cell, params, carry, xs) -> bool:
    """Whether the compiled forward of `model` holds cuDNN's RNN custom call."""
    text = jax.jit(lambda p, c, x: sj.scan(model, p, c, x)[1]).lower(params, carry, xs).as_text()
    return "cudnn_rnn" in text


def check_row(config: problems.Config, cell: str, path: Path, seed: int) -> dict:
    """One path of one cell at one config against its float64 reference."""
    params, carry, xs, targets = _draw(config, cell, seed)
    want = reference(cell, config.hidden, config.features, params, carry, xs, targets, ROLLOUT_STEPS)
    model = sj.chain(path.layer(config.hidden), sj.dense(config.features))
    device = jax.devices()[0]
    on_device = jax.device_put((params, carry, xs, targets), device)
    got = _results(model, *on_device, ROLLOUT_STEPS)
    errors = {q: relative_error(got[q], want[q]) for q in QUANTITIES}
    row = {"config": config.name, "cell": cell, "path": path.name, "backend": jax.default_backend(),
           "relative_error": errors, "tolerance": path.tolerance,
           "ok": all(e <= path.tolerance for e in errors.values())}
    if path.name == "cuDNN":
        row["cudnn_rnn_in_program"] = _holds_cudnn_call(model, *on_device[:3])
        row["ok"] = row["ok"] and row["cudnn_rnn_in_program"]
    return row


def table(rows: list[dict]) -> str:
    head = ["config", "cell", "path"] + [f"{q} rel. error" for q in QUANTITIES] + ["tolerance", "ok"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        errors = " | ".join(f"{r['relative_error'][q]:.2e}" for q in QUANTITIES)
        cudnn_note = "" if "cudnn_rnn_in_program" not in r else \
            ("" if r["cudnn_rnn_in_program"] else " (no cudnn_rnn call in the program)")
        lines.append(f"| {r['config']} | {r['cell']} | {r['path']} | {errors} | {r['tolerance']:.0e} | "
                     f"{'yes' if r['ok'] else 'NO'}{cudnn_note} |")
    return "\n".join(lines)


def plans(configs) -> dict:
    """What `plan_for` gives each config and cell on this backend."""
    return {f"{c.name}/{cell}": plan_for(c.batch, c.time, c.features, c.hidden, cell)._asdict()
            for c in configs for cell in problems.CELLS}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", help=f"comma-separated, from {list(CHECK_CONFIGS)} (default: check, and gpu "
                                          "where the default backend is a GPU)")
    parser.add_argument("--cells", default=",".join(problems.CELLS))
    parser.add_argument("--out", default="benchmarks/results/gpu_check.json", help="JSON path")
    args = parser.parse_args(argv)
    on_gpu = jax.default_backend() == "gpu"
    names = args.configs.split(",") if args.configs else ["check"] + (["gpu"] if on_gpu else [])
    unknown = [n for n in names if n not in CHECK_CONFIGS]
    if unknown:
        parser.error(f"--configs: unknown {unknown}; expected names from {list(CHECK_CONFIGS)}")
    if on_gpu:  # float32 means float32: no TF32 in XLA's dots or cuDNN, as in `benchmarks.bench`
        jax.config.update("jax_default_matmul_precision", "highest")
    configs = [CHECK_CONFIGS[n] for n in names]
    rows = []
    for config in configs:
        for cell in args.cells.split(","):
            for seed, path in enumerate(paths(cell)):
                rows.append(check_row(config, cell, path, seed))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    payload = {"command": "python3 -m benchmarks.gpu_check " + " ".join(argv if argv is not None else sys.argv[1:]),
               "machine": machine(), "versions": versions([]), "device_kind": jax.devices()[0].device_kind,
               "plans": plans(configs), "rows": rows, "ok": all(r["ok"] for r in rows)}
    write_json(args.out, payload)
    print(f"\n{jax.devices()[0].device_kind} ({jax.default_backend()}):\n{table(rows)}\nJSON: {args.out}")
    return payload


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
