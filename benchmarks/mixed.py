"""Mixed precision: seqjax in float32 against the same model with bfloat16 matmuls, side by side.

    python -m benchmarks.mixed                                  # every config, LSTM and GRU, every task
    python -m benchmarks.mixed --configs medium,large --cells lstm --rounds 21
    python -m benchmarks.mixed --configs tiny --rounds 2        # smoke test

The mixed contender is the bench's seqjax task with `sj.lstm(H, matmul_dtype=jnp.bfloat16)` (or
`sj.gru`) as its layer: every matmul of the layer (forward, and the hand-written backward pass) takes
bfloat16 operands and sums in float32; carry, gates, outputs, the dense head, the loss and Adam stay float32.
Before timing, its outputs (forward: all outputs; train: loss and every gradient; rollout: the
closed-loop predictions, whose `cell.step` rounds the weights at every step) are checked against
float32's within bfloat16's precision. Interleaved rounds, medians after compilation (`benchmarks.timing`);
a table printed, JSON written (default `benchmarks/results/mixed.json`). Faster only where the machine
has fast bfloat16 matmuls (XLA:CPU uses AVX512-BF16 where the CPU has it; GPUs, TPUs).
"""

from __future__ import annotations

import argparse
import sys
import time

import jax.numpy as jnp

from benchmarks import problems, report, seqjax_tasks, timing

MIXED = "seqjax_bf16"
TASKS = ("forward", "train", "rollout")
# bfloat16 keeps 8 significant bits: outputs and gradients within a few percent of their scale
RTOL, ATOL = 5e-2, 1e-3


def contenders(problem: problems.Problem, task: str) -> list[timing.Contender]:
    """The bench's float32 seqjax contender for `task`, and the same with the mixed layer."""
    build = seqjax_tasks.BUILDERS[task]
    return [build(problem), build(problem, seqjax_tasks.layer_cell(problem, matmul_dtype=jnp.bfloat16), MIXED)]


def run_row(config, cell: str, task: str, rounds: int) -> dict:
    problem = problems.make_problem(config, cell)
    both = contenders(problem, task)
    first = timing.first_calls(both)
    diffs = timing.compare({c.name: c.result() for c in both}, "seqjax", rtol=RTOL, atol=ATOL)[MIXED]
    t = timing.measure(both, rounds=rounds, first=first, budget_s=60.0)
    return {"config": config.name, "cell": cell, "task": task, "float32_ms": t["seqjax"].median_ms,
            "bf16_ms": t[MIXED].median_ms, "speedup": t["seqjax"].median_ms / t[MIXED].median_ms,
            "first_call_ms": {n: v.first_call_ms for n, v in t.items()}, "max_abs_diff": diffs,
            "how": {c.name: c.how for c in both}}


def table(rows: list[dict]) -> str:
    head = ["config", "cell", "task", "float32 ms", "bf16 matmuls ms", "speedup", "largest absolute difference"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        worst = max(r["max_abs_diff"], key=r["max_abs_diff"].get)
        lines.append(f"| {r['config']} | {r['cell']} | {r['task']} | {r['float32_ms']:.3g} | {r['bf16_ms']:.3g} | "
                     f"{r['speedup']:.2f}x | {worst} {r['max_abs_diff'][worst]:.2g} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pool = {**problems.CONFIGS, **problems.GPU_CONFIGS, **problems.QUICK_CONFIGS}
    parser.add_argument("--configs", default=",".join(problems.CONFIGS), help=f"comma-separated, from {list(pool)}")
    parser.add_argument("--cells", default=",".join(problems.CELLS))
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/mixed.json; with "
                                                    "--configs tiny a file in the temp directory)")
    args = parser.parse_args(argv)
    configs, cells, tasks = args.configs.split(","), args.cells.split(","), args.tasks.split(",")
    for values, allowed, flag in ((configs, pool, "--configs"), (cells, problems.CELLS, "--cells"),
                                  (tasks, TASKS, "--tasks")):
        if any(v not in allowed for v in values):
            parser.error(f"{flag}: choose from {list(allowed)}; got {values}")
    started = time.time()
    rows = []
    for name in configs:
        for cell in cells:
            for task in tasks:
                if (name, task) in problems.SKIP:
                    continue
                rows.append(run_row(pool[name], cell, task, args.rounds))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    payload = {"machine": report.machine(), "versions": report.versions([]), "rounds": args.rounds,
               "seconds": time.time() - started, "rows": rows,
               "command": "python -m benchmarks.mixed " + " ".join(argv if argv is not None else sys.argv[1:])}
    report.save_run(payload, args.out, "mixed", quick=configs == ["tiny"])
    return payload


if __name__ == "__main__":
    main()
