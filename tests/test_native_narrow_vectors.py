"""The native kernels built for narrower vector registers than this machine's own.

`-march=native` on this x86 machine gives AVX-512, where a kernel's 16-float vector is one register. AVX2
machines (8 floats) and SSE or NEON ones (4) run another code path: each 16-float vector is a struct of
native vectors and the matmul tiles go one 16-float column at a time in register blocks (`gemm_column`). Here
the kernels are built for AVX2 (`-mno-avx512f`) and for SSE2 (`-mno-avx`, whose 16 registers also split
a tile's rows into blocks) through `SEQJAX_NATIVE_FLAGS`, and every kernel's float64 NumPy comparison and
same-bits check runs on them, in a fresh process: XLA keeps the first registration of a kernel in a process.
"""

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from seqjax.fast import native

ROOT = Path(__file__).resolve().parent.parent
BUILDS = {"avx2": ("-mno-avx512f", 32), "sse2": ("-mno-avx", 16)}
TEST_FILES = ["tests/test_native.py", "tests/test_native_gru.py", "tests/test_native_closed_loop.py",
              "tests/test_native_stack_closed_loop.py", "tests/test_native_train_head.py",
              "tests/test_native_batch_split.py", "tests/test_native_strassen.py"]
SELECTED = "float64_numpy or same_bits"  # every kernel against float64 NumPy, and one thread against all
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _run(args, flags, cache):
    env = dict(os.environ, SEQJAX_NATIVE_FLAGS=flags, SEQJAX_CACHE_DIR=str(cache))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_this_build_is_the_widest_the_machine_has():
    assert native.available(), native.unavailable_reason()
    assert native.vector_bytes() in (16, 32, 64)
    cpu = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else []
    if X86 and cpu and not native.extra_flags():  # -march=native alone: the widest registers the CPU has
        assert native.vector_bytes() == (64 if "avx512f" in cpu else 32 if "avx" in cpu else 16)


@pytest.mark.skipif(not X86, reason="the builds are chosen with x86 instruction-set flags")
@pytest.mark.parametrize("build", sorted(BUILDS))
def test_kernels_built_for_narrower_registers_match_float64_numpy(build, tmp_path):
    flags, vector_bytes = BUILDS[build]
    probe = _run(["-c", "from seqjax.fast import native; print(native.vector_bytes())"], flags, tmp_path)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.split()[-1] == str(vector_bytes)  # the build is the narrow one
    selection = ["-m", "pytest", "-q", "-p", "no:cacheprovider", *TEST_FILES, "-k", SELECTED]
    collected = _run([*selection, "--collect-only"], flags, tmp_path)
    selected = re.search(r"(\d+)/\d+ tests collected", collected.stdout)
    assert selected and int(selected.group(1)) >= 150, collected.stdout[-2000:]  # every kernel's float64 tests
    result = _run(selection, flags, tmp_path)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.fullmatch(rf"{selected.group(1)} passed, \d+ deselected(, \d+ warnings?)? in .*", summary), summary
