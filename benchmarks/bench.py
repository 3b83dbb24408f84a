"""Side-by-side benchmark: seqjax vs Flax `nn.RNN`, Keras 3 (JAX backend) and PyTorch, on this machine.

    python -m benchmarks.bench                       # everything; JSON in benchmarks/results/latest.json
    python -m benchmarks.bench --quick               # CI smoke test: tiny sizes, a few rounds
    python -m benchmarks.bench --configs medium --cells lstm --tasks train --rounds 30

For each (config, cell, task) every contender gets the same weights and data; their outputs (forward:
all outputs; train: loss and every gradient; rollout: the closed-loop predictions) are checked equal to
seqjax's before anything is timed. Then all contenders run in interleaved rounds; the table reports the
median per call after compilation (first-call time, which includes compiling, apart) and the speedup of
seqjax over the fastest peer. A `bound` column times only the matmuls a recurrent loop cannot avoid
(`benchmarks/bounds.py`) in the same rounds: fastest peer / bound is the most a JAX loop can reach here.
Keras and PyTorch are optional (`pip install -e ".[peers]"`).

Where JAX's default backend is a GPU, PyTorch runs on it too (cuDNN), both without TF32 (float32 matmuls
as on CPU, so outputs compare to the same tolerance), the `gpu` config (batch 256, T 200, H 512) joins the
default run, and LSTM forward and train rows add seqjax's opt-in cuDNN path
(`seqjax_cudnn`). None of that has run on a GPU yet (BENCHMARKS.md, "GPU").
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

from benchmarks import bounds, fma_peak, memory, problems, report, seqjax_tasks, timing

PEER_MODULES = ("flax", "keras", "torch")
REMAT_CHUNK = 100  # steps per checkpointed chunk in the memory comparison (~sqrt(10,000))
ROW_BUDGET_S = 90.0  # the largest rows get fewer rounds (at least 5) to stay near this


def _peer_modules(wanted):
    """The importable peers among `wanted`, and a note for each one left out."""
    import importlib

    mods, notes = {}, {}
    for name in wanted:
        mod = importlib.import_module(f"benchmarks.peers_{name}")
        if mod.available():
            mods[name] = mod
        else:
            notes[name] = "not installed" if name != "torch" else f"needs torch=={mod.REQUIRED_VERSION}"
    return mods, notes


def matmul_peak_gflops(size: int = 1024, rounds: int = 20) -> float:
    """Median GFLOP/s of a jitted `size x size` float32 `jnp.dot` on the default device."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((size, size), jnp.float32)
    fn = jax.jit(lambda a: a @ a)
    t = timing.measure([timing.Contender("dot", lambda: fn(a), dict)], rounds=rounds, min_block_s=0.05)
    return 2 * size**3 / (t["dot"].median_ms * 1e-3) / 1e9


def run_row(config, cell, task, peers, rounds, min_block_s):
    problem = problems.make_problem(config, cell)
    contenders = ([seqjax_tasks.BUILDERS[task](problem)] + seqjax_tasks.cudnn_contenders(problem, task)
                  + [m.BUILDERS[task](problem) for m in peers.values()])
    first = timing.first_calls(contenders)  # compile before the checks, so first calls include it
    diffs = timing.compare({c.name: c.result() for c in contenders}, "seqjax")
    bound = bounds.BUILDERS[task](problem)  # not the same work: timed alongside, never compared
    first.update(timing.first_calls([bound]))
    timings = timing.measure(contenders + [bound], rounds=rounds, min_block_s=min_block_s, first=first,
                             budget_s=ROW_BUDGET_S)
    gflops = None
    if task == "forward":
        gflops = problems.forward_flops(config, cell) / (timings["seqjax"].median_ms * 1e-3) / 1e9
    row = report.Row(config.name, cell, task, {n: t._asdict() for n, t in timings.items()},
                     {c.name: c.how for c in contenders}, diffs, gflops)
    del contenders
    gc.collect()
    return row


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few rounds (CI smoke test)")
    parser.add_argument("--configs", default=None, help=f"comma-separated, from {list(problems.CONFIGS)} "
                                                        f"and {list(problems.GPU_CONFIGS)} (default on a GPU)")
    parser.add_argument("--cells", default=",".join(problems.CELLS))
    parser.add_argument("--tasks", default=",".join(problems.TASKS))
    parser.add_argument("--peers", default=",".join(PEER_MODULES), help="comma-separated; flax is required")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per row (default 15, quick 3)")
    parser.add_argument("--no-memory", action="store_true", help="skip the remat peak-memory comparison")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/latest.json; "
                                                    "with --quick a file in the temp directory)")
    args = parser.parse_args(argv)

    os.environ.setdefault("KERAS_BACKEND", "jax")
    import jax

    from seqjax.fast import cudnn

    on_gpu = jax.default_backend() == "gpu"
    if on_gpu:  # float32 means float32: no TF32 in XLA's dots or cuDNN (PyTorch's side: peers_torch)
        jax.config.update("jax_default_matmul_precision", "highest")
    configs = problems.QUICK_CONFIGS if args.quick else {**problems.CONFIGS, **(problems.GPU_CONFIGS if on_gpu else {})}
    if args.configs:
        pool = {**problems.CONFIGS, **problems.GPU_CONFIGS, **problems.QUICK_CONFIGS}
        unknown = [c for c in args.configs.split(",") if c not in pool]
        if unknown:
            parser.error(f"--configs: unknown {unknown}; choose from {list(pool)}")
        configs = {c: pool[c] for c in args.configs.split(",")}
    cells = args.cells.split(",")
    tasks = args.tasks.split(",")
    for value, allowed, flag in ((cells, problems.CELLS, "--cells"), (tasks, problems.TASKS, "--tasks"),
                                 (args.peers.split(","), PEER_MODULES, "--peers")):
        if any(v not in allowed for v in value):
            parser.error(f"{flag}: choose from {list(allowed)}; got {value}")
    rounds = args.rounds or (3 if args.quick else 15)
    min_block_s = 0.002 if args.quick else 0.03
    peers, missing = _peer_modules(args.peers.split(","))
    if "flax" not in peers:
        parser.error("flax must be importable: it is the peer every run compares with")
    names = ["seqjax"] + ([report.CUDNN] if cudnn.cudnn_available() else []) + list(peers) + [bounds.NAME]

    started = time.time()
    load_at_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"peers: {', '.join(peers)}" + "".join(f"; {k}: {v}" for k, v in missing.items()), flush=True)
    peak = matmul_peak_gflops(256 if args.quick else 1024, 3 if args.quick else 20)
    print(f"jnp.dot peak here: {peak:.0f} GFLOP/s", flush=True)
    fma = None  # the CPU's: beside a GPU's matmul peak it would compare unlike things
    if jax.default_backend() == "cpu":
        fma = fma_peak.fma_peak_gflops(seconds=0.05 if args.quick else 0.2, repeats=1 if args.quick else 5)
    if fma is not None:
        print(f"FMA peak here (python -m benchmarks.fma_peak): {fma:.0f} GFLOP/s", flush=True)
    memory_system = report.machine()
    sees = "sees" if memory_system["seqjax_sees_huge_pages"] else "does not see"
    print(f"transparent huge pages: {memory_system['transparent_hugepage']}, GLIBC_TUNABLES="
          f"{memory_system['glibc_tunables']!r}: seqjax's plan {sees} huge pages", flush=True)
    rows = []
    for config in configs.values():
        for cell in cells:
            for task in tasks:
                if (config.name, task) in problems.SKIP:
                    continue
                row = run_row(config, cell, task, peers, rounds, min_block_s)
                rows.append(row)
                print(report.table([row], names).splitlines()[-1], flush=True)

    mem = []
    if not args.no_memory:
        b, t, f, h = (4, 200, 3, 16) if args.quick else (8, 10_000, 8, 256)
        chunk = 20 if args.quick else REMAT_CHUNK
        for remat, reference in ((None, True), (None, False), (chunk, False)):  # quick: XLA's plan only
            mem.append(memory.run_variant(b, t, f, h, remat, False, reference) if args.quick else
                       memory.in_subprocess(b, t, f, h, remat, reference=reference))
            print(f"memory, T={t} H={h}: {mem[-1]}", flush=True)

    print()
    print(report.table(rows, names))
    print()
    print(report.compile_table(rows, names))
    if mem:
        print()
        print(report.memory_table(mem))
    payload = {"machine": {**report.machine(), "load_average_at_start": load_at_start},
               "versions": report.versions(list(peers)), "missing_peers": missing,
               "matmul_peak_gflops": peak, "fma_peak_gflops": fma, "quick": args.quick, "rounds": rounds,
               "seconds": time.time() - started,
               "command": "python -m benchmarks.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
               "rows": [r._asdict() for r in rows], "memory": mem, "goals": {f"{c}/{t}": g for (c, t), g in
                                                                           report.GOALS.items()}}
    report.save_run(payload, args.out, "latest" if not args.quick else "bench", quick=args.quick)
    return payload


if __name__ == "__main__":
    main()
