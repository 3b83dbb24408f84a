"""Where a task's time goes inside XLA: the compiled operations of one call, grouped by how often they run.

    python -m benchmarks.profile --config large --cell lstm --task train

Runs seqjax's contender for the task (as `benchmarks.bench` times it) under `jax.profiler`, then sums
the leaf operations (thunks) of the trace: per step (run a multiple of T times: the loop bodies), per
chunk (run more than once but fewer than T times), once. Matmuls are counted apart from the rest (on
XLA:CPU they show as `dot*` or `ynn_fusion*`). Milliseconds per call; the profiler adds some overhead,
so compare the parts with each other rather than with `bench`'s medians. Names are those of the
compiled HLO (`jax.jit(f).lower(...).compile().as_text()`).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import math
import re
import tempfile

import jax

from benchmarks import problems, seqjax_tasks

# trace events that are not leaf operations: executors, loops, waits, Python frames
_NOT_LEAF = re.compile(r"^(ThunkExecutor|while|conditional|call|\$|SlinkyThreadPool|PjitFunction|Threadpool|end: )")


def _is_matmul(name: str) -> bool:
    return name.startswith(("dot", "ynn_fusion", "custom-call"))


def leaf_times(trace_events, calls: int) -> dict[str, tuple[float, float]]:
    """`{operation: (ms per call, runs per call)}` over the complete ("X") leaf events of a trace."""
    total, count = collections.Counter(), collections.Counter()
    for e in trace_events:
        if e.get("ph") == "X" and not _NOT_LEAF.match(e["name"]):
            total[e["name"]] += e["dur"]
            count[e["name"]] += 1
    return {k: (total[k] / calls / 1e3, count[k] / calls) for k in total}


def group(leaves: dict[str, tuple[float, float]], steps: int) -> dict[tuple[str, str], float]:
    """Milliseconds per call by (how often: per step / per chunk / once, matmul or other)."""
    out = collections.defaultdict(float)
    for name, (ms, runs) in leaves.items():
        how = "per step" if runs >= steps and runs % steps == 0 else "per chunk" if runs > 1 else "once"
        out[how, "matmul" if _is_matmul(name) else "other"] += ms
    return dict(out)


def profile(config: problems.Config, cell: str, task: str, calls: int = 3) -> dict[str, tuple[float, float]]:
    """Leaf times of `calls` profiled calls of seqjax's contender (after warm calls)."""
    contender = seqjax_tasks.BUILDERS[task](problems.make_problem(config, cell))
    for _ in range(2):
        jax.block_until_ready(contender.run())
    with tempfile.TemporaryDirectory() as where:
        with jax.profiler.trace(where):
            for _ in range(calls):
                jax.block_until_ready(contender.run())
        (path,) = glob.glob(f"{where}/**/*.trace.json.gz", recursive=True)
        with gzip.open(path) as f:
            events = json.load(f)["traceEvents"]
    return leaf_times(events, calls)


def steps_of(config: problems.Config, task: str) -> int:
    """How many times a loop body runs per call divides this (a rollout has a warm-up and a closed loop)."""
    return math.gcd(problems.WARMUP_STEPS, problems.CLOSED_LOOP_STEPS) if task == "rollout" else config.time


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="large", choices=sorted(problems.CONFIGS))
    parser.add_argument("--cell", default="lstm", choices=problems.CELLS)
    parser.add_argument("--task", default="train", choices=problems.TASKS)
    parser.add_argument("--top", type=int, default=15, help="how many of the costliest non-step operations to list")
    args = parser.parse_args(argv)
    config = problems.CONFIGS[args.config]
    leaves = profile(config, args.cell, args.task)
    steps = steps_of(config, args.task)
    groups = group(leaves, steps)
    print(f"{args.config} {args.cell} {args.task}: ms per call, sum of leaf operations {sum(groups.values()):.1f}")
    for (how, kind), ms in sorted(groups.items()):
        print(f"  {how:9} {kind:6} {ms:8.1f}")
    print("costliest operations not run every step (ms per call, runs per call):")
    rest = sorted(((ms, runs, k) for k, (ms, runs) in leaves.items() if runs < steps), reverse=True)
    for ms, runs, name in rest[:args.top]:
        print(f"  {ms:8.2f} {runs:6.0f}  {name}")
    return {"groups": {f"{h} {k}": v for (h, k), v in groups.items()}, "leaves": leaves}


if __name__ == "__main__":
    main()
