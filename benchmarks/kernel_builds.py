"""Builds of the native kernels side by side: one compiler and its flags (or one version of the source) against another.

The bench times whole framework calls; this times the kernels alone, without XLA, so that what a build changes (GCC
against clang, AVX2 against AVX-512, a change to the source) shows without the host's noise around a framework
call. Each build is `benchmarks/kernel_builds.cc` compiled with the kernels' source included, without XLA's
handlers (`-O3 -march=native`, as `seqjax.fast.native` builds them, and the build's own flags); the builds run one
after another in separate processes, round after round, each process timing every shape (one untimed call, then
`--reps` timed ones, its median). The table gives, per shape, the median over rounds of each build's medians, its
GFLOP/s (the recurrent matmul's FLOPs) and its ratio to the first build, and says where a build's outputs differ
from the first's.

    python -m benchmarks.kernel_builds --build gcc=g++ --build clang=clang++
    python -m benchmarks.kernel_builds --build avx512=c++ --build "avx2=c++ -mno-avx512f"
    python -m benchmarks.kernel_builds --build new=c++ --build "old=c++ source=../old/seqjax/fast/kernels/lstm_cpu.cc"

A build is NAME=COMPILER [FLAG ...] [source=PATH] (split as a shell would); by default one build, the compiler
and `SEQJAX_NATIVE_FLAGS` the kernels use. Shapes are TASK:CELL:B:F:H:T[:PRODUCT] (`--shape`, repeated; by default
the kernel calls of the bench's LSTM rows at medium, large and many and two GRU calls): `forward` runs T steps of
inputs and writes every h (no head), `closed_loop` T steps fed back through an F-output dense head; PRODUCT
`plain` (the default) or `strassen` (LSTM only: the recurrent products by Strassen's where the kernel takes it, as
the plan has them from 128 units; the GFLOP/s column then counts the plain product's multiply-adds).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

import jax

from benchmarks import report
from seqjax.fast import native

HARNESS = Path(__file__).with_suffix(".cc")
DEFAULT_SHAPES = (  # the LSTM's with Strassen's product, as the plan runs them at these sizes
    "forward:lstm:64:8:128:100:strassen",       # medium forward
    "forward:lstm:128:32:256:200:strassen",     # large forward
    "forward:lstm:1024:8:128:100:strassen",     # many: the rollout's warm-up
    "closed_loop:lstm:128:32:256:200:strassen",  # large rollout's closed loop
    "closed_loop:lstm:1024:8:128:200:strassen",  # many rollout's closed loop
    "forward:gru:64:8:128:100",
    "closed_loop:gru:1024:8:128:200",
)
_TASKS, _CELLS, _PRODUCTS = ("forward", "closed_loop"), ("lstm", "gru"), ("plain", "strassen")


class Build(NamedTuple):
    name: str
    compiler: str
    flags: tuple[str, ...]
    source: Path


def parse_build(spec: str) -> Build:
    """NAME=COMPILER [FLAG ...] [source=PATH] as a Build (the kernels' own source where no source= is given)."""
    name, sep, command = spec.partition("=")
    words = shlex.split(command)
    if not sep or not name or not words or "=" in words[0]:
        raise ValueError(f"kernel_builds: --build must be NAME=COMPILER [FLAG ...] [source=PATH], got {spec!r}")
    sources = [w.partition("=")[2] for w in words[1:] if w.startswith("source=")]
    if len(sources) > 1:
        raise ValueError(f"kernel_builds: --build takes at most one source=PATH, got {spec!r}")
    source = Path(sources[0]) if sources else native.SOURCE
    if not source.is_file():
        raise ValueError(f"kernel_builds: --build {name}'s source {str(source)!r} is not a file")
    flags = tuple(w for w in words[1:] if not w.startswith("source="))
    return Build(name, words[0], flags, source.resolve())


def parse_shape(text: str) -> tuple[str, str, int, int, int, int, str]:
    """TASK:CELL:B:F:H:T[:PRODUCT] as (task, cell, B, F, H, T, product)."""
    parts = text.split(":")
    try:
        task, cell, *sizes = parts[:6]
        b, f, h, t = (int(s) for s in sizes)
    except ValueError:
        raise ValueError(f"kernel_builds: a shape must be TASK:CELL:B:F:H:T[:PRODUCT], got {text!r}") from None
    product = parts[6] if len(parts) == 7 else "plain"
    if (len(parts) > 7 or task not in _TASKS or cell not in _CELLS or product not in _PRODUCTS
            or min(b, f, h, t) < 1 or (product == "strassen" and cell != "lstm")):
        raise ValueError(f"kernel_builds: a shape must be TASK:CELL:B:F:H:T[:PRODUCT] with TASK in {_TASKS}, CELL "
                         f"in {_CELLS}, positive sizes and PRODUCT in {_PRODUCTS} (strassen for lstm only), got "
                         f"{text!r}")
    return task, cell, b, f, h, t, product


def flops(shape: str) -> float:
    """The recurrent matmul's FLOPs of one call: [x, h] w per forward step, h (w_h + w_d w_x) per closed-loop step
    (the head's product left out)."""
    task, cell, b, f, h, t, _ = parse_shape(shape)
    gates = 4 if cell == "lstm" else 3
    return 2.0 * t * b * (h if task == "closed_loop" else f + h) * gates * h


def compiler_version(compiler: str) -> str:
    """The first line of `compiler --version`, or why it is unknown."""
    try:
        done = subprocess.run([compiler, "--version"], check=False, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"
    return (done.stdout.splitlines() or ["unknown"])[0]


def compile_build(build: Build, out: Path) -> None:
    """The harness built with `build` into `out`; raises RuntimeError with the compiler's message if it fails."""
    command = [build.compiler, *native.COMPILE_FLAGS, native.arch_flag(), *build.flags,
               f"-I{jax.ffi.include_dir()}", f'-DSEQJAX_KERNEL_SOURCE="{build.source}"', str(HARNESS), "-o", str(out)]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"kernel_builds: building {build.name} failed: {done.stderr.strip()[-2000:]}")


def run_build(executable: Path, shapes, reps: int, threads: int) -> dict[str, tuple[float, float]]:
    """One process of a build: {shape: (median ms, checksum)}."""
    done = subprocess.run([str(executable), str(reps), str(threads), *shapes], capture_output=True, text=True,
                          check=True, timeout=3600)
    result = {}
    for line in done.stdout.splitlines():
        shape, median, _, checksum = line.split()
        result[shape] = (float(median), float(checksum))
    return result


def compare(builds, shapes, rounds: int, reps: int, threads: int) -> dict:
    """Every build compiled, then `rounds` rounds of one process per build in turn: {shape: {build: {...}}}."""
    times = {s: {b.name: [] for b in builds} for s in shapes}
    checksums = {s: {} for s in shapes}
    with tempfile.TemporaryDirectory() as tmp:
        executables = {}
        for build in builds:
            executables[build.name] = Path(tmp) / f"kernel_builds_{len(executables)}"
            compile_build(build, executables[build.name])
        for _ in range(rounds):
            for build in builds:
                for shape, (ms, checksum) in run_build(executables[build.name], shapes, reps, threads).items():
                    times[shape][build.name].append(ms)
                    checksums[shape][build.name] = checksum
    first = builds[0].name
    table = {}
    for shape in shapes:
        base = statistics.median(times[shape][first])
        table[shape] = {}
        for build in builds:
            runs = times[shape][build.name]
            median = statistics.median(runs)
            ref, got = checksums[shape][first], checksums[shape][build.name]
            table[shape][build.name] = {
                "median_ms": median, "runs_ms": runs, "gflops": flops(shape) / median / 1e6, "ratio": median / base,
                "checksum": got, "outputs_differ": abs(got - ref) > 1e-4 * max(1.0, abs(ref))}
    return table


def format_table(table: dict, builds) -> str:
    """The comparison as a Markdown table: per shape, each build's median ms, GFLOP/s and ratio to the first."""
    names = [b.name for b in builds]
    lines = ["| shape | " + " | ".join(f"{n} ms (GFLOP/s, ratio)" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for shape, row in table.items():
        cells = []
        for n in names:
            r = row[n]
            cells.append(f"{r['median_ms']:.4g} ({r['gflops']:.0f}, {r['ratio']:.3f}"
                         f"{', outputs differ' if r['outputs_differ'] else ''})")
        lines.append(f"| {shape} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", action="append", default=[], help="NAME=COMPILER [FLAG ...] [source=PATH]")
    parser.add_argument("--shape", action="append", default=[], help="TASK:CELL:B:F:H:T[:plain|:strassen]")
    parser.add_argument("--rounds", type=int, default=5, help="processes per build, alternating")
    parser.add_argument("--reps", type=int, default=5, help="timed calls per shape in each process")
    parser.add_argument("--threads", type=int, default=0, help="kernel threads (0: all)")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.reps < 1 or args.threads < 0:
        raise ValueError(f"kernel_builds: --rounds and --reps must be positive and --threads >= 0, got "
                         f"{args.rounds}, {args.reps}, {args.threads}")
    if args.build:
        builds = [parse_build(spec) for spec in args.build]
    else:
        cxx = native.compiler()
        if cxx is None:
            raise RuntimeError("kernel_builds: no C++ compiler found (set CXX, or install g++ or clang++)")
        builds = [Build("default", cxx, native.extra_flags(), native.SOURCE)]
    if len({b.name for b in builds}) != len(builds):
        raise ValueError(f"kernel_builds: build names must differ, got {[b.name for b in builds]}")
    shapes = list(dict.fromkeys(args.shape or DEFAULT_SHAPES))
    for shape in shapes:
        parse_shape(shape)
    table = compare(builds, shapes, args.rounds, args.reps, args.threads)
    print(format_table(table, builds))
    result = {"builds": [{"name": b.name, "compiler": b.compiler, "compiler_version": compiler_version(b.compiler),
                          "flags": list(b.flags), "source": str(b.source)} for b in builds],
              "threads": args.threads, "rounds": args.rounds, "reps": args.reps, "machine": report.machine(),
              "results": table}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
