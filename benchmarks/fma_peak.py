"""The machine's float32 FMA peak: GFLOP/s of a loop that does nothing but independent fused multiply-adds.

`jnp.dot`'s peak (`bench.matmul_peak_gflops`) is what a good matmul reaches here; this is the ceiling
above it, what the cores' FMA units can issue at all (no loads, no stores, every operand in a register).
A kernel's share of it says how much room is left: the native kernels' gemm loop, the gate activations
and the rest of a step all come out of it.

The loop (`fma_peak.cc`) is built as the native kernels are (`seqjax.fast.native.build_shared`: their
compiler, `-O3 -march=native`, cached beside them); each thread keeps 24 vectors of the widest registers
the build targets (AVX-512: 64 bytes, AVX: 32, otherwise 16) and updates each by `a = a * c + b` per
iteration, so the FMA units, not their latency, are the limit. `python -m benchmarks.fma_peak` prints one
thread's and every core's.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import os
import subprocess
from pathlib import Path

from seqjax.fast import native

SOURCE = Path(__file__).with_suffix(".cc")  # the loop, C++


@functools.lru_cache(maxsize=None)
def _library() -> ctypes.CDLL | None:
    """The built loop (`fma_peak.cc`, cached beside the native kernels), or None where no compiler is found or
    it cannot build the loop."""
    cxx = native.compiler()
    if not cxx:
        return None
    try:
        lib = ctypes.CDLL(str(native.build_shared(cxx, SOURCE)))
    except (OSError, subprocess.SubprocessError):
        return None
    lib.seqjax_fma_seconds.restype = ctypes.c_double
    lib.seqjax_fma_seconds.argtypes = (ctypes.c_int, ctypes.c_long)
    lib.seqjax_fma_flops_per_iteration.restype = ctypes.c_long
    return lib


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def fma_peak_gflops(threads: int | None = None, seconds: float = 0.2, repeats: int = 5) -> float | None:
    """Best-of-`repeats` GFLOP/s of `threads` threads (default: the cores this process may use) each running
    the FMA loop for about `seconds`; None where the loop cannot be built (no C++ compiler)."""
    threads = cores() if threads is None else threads
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"fma_peak_gflops: threads must be a positive int, got {threads!r}")
    if not seconds > 0 or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"fma_peak_gflops: seconds must be > 0 and repeats a positive int, got seconds={seconds!r}, "
                         f"repeats={repeats!r}")
    lib = _library()
    if lib is None:
        return None
    iterations = 100_000
    while (elapsed := lib.seqjax_fma_seconds(threads, iterations)) < seconds / 4:  # calibrate
        iterations *= 4
    iterations = max(1, int(iterations * seconds / elapsed))
    best = min(lib.seqjax_fma_seconds(threads, iterations) for _ in range(repeats))
    return threads * iterations * lib.seqjax_fma_flops_per_iteration() / best / 1e9


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.2, help="length of each timed run")
    args = parser.parse_args(argv)
    n = cores()
    result = {"one_thread": fma_peak_gflops(1, args.seconds), "all_cores": fma_peak_gflops(n, args.seconds),
              "cores": n}
    if result["one_thread"] is None:
        print("the FMA loop could not be built: no C++ compiler found (set CXX), or it failed")
    else:
        print(f"FMA peak: {result['one_thread']:.1f} GFLOP/s on one thread, {result['all_cores']:.1f} on {n}")
    return result


if __name__ == "__main__":
    main()
