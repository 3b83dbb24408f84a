"""The FMA peak loop the benchmark reports beside `jnp.dot`'s peak (`benchmarks.fma_peak`)."""

import platform

import pytest

from benchmarks import fma_peak, report
from seqjax.fast import native

needs_compiler = pytest.mark.skipif(native.compiler() is None, reason="no C++ compiler: the loop is not built")


def _vector_bytes() -> int:
    """The widest float registers `-march=native` targets here, from the CPU's flags (Linux x86)."""
    with open("/proc/cpuinfo") as f:
        flags = next(line for line in f if line.startswith("flags")).split()
    return 64 if "avx512f" in flags else 32 if "avx" in flags else 16


@needs_compiler
@pytest.mark.skipif(platform.machine() != "x86_64", reason="reads x86 feature flags")
def test_loop_counts_the_flops_of_24_vectors_of_the_widest_registers():
    lib = fma_peak._library()
    assert lib.seqjax_fma_flops_per_iteration() == 2 * 24 * _vector_bytes() // 4
    assert lib.seqjax_fma_seconds(2, 1000) > 0


@needs_compiler
def test_peak_is_a_rate_from_every_thread():
    one = fma_peak.fma_peak_gflops(1, seconds=0.01, repeats=1)
    assert one > 0
    assert fma_peak.main(["--seconds", "0.01"])["cores"] == fma_peak.cores()


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_bad_thread_count_is_refused(threads):
    with pytest.raises(ValueError, match=r"fma_peak_gflops: threads must be a positive int, got"):
        fma_peak.fma_peak_gflops(threads)


@pytest.mark.parametrize("seconds, repeats", [(0, 1), (-1.0, 1), (0.01, 0), (0.01, 2.5)])
def test_bad_timing_arguments_are_refused(seconds, repeats):
    with pytest.raises(ValueError, match=r"fma_peak_gflops: seconds must be > 0 and repeats a positive int"):
        fma_peak.fma_peak_gflops(1, seconds, repeats)


def test_goals_give_the_large_forward_as_a_share_of_both_peaks():
    r = report.Row("large", "lstm", "forward", {"seqjax": {"median_ms": 1.0}, "flax": {"median_ms": 2.0}}, {}, {},
                   90.0)
    assert "90 GFLOP/s = 90% of the matmul peak (goal 80%) and 45% of the FMA peak" in report.goals_summary(
        [r], 100.0, 200.0)
    assert "FMA peak" not in report.goals_summary([r], 100.0)


def test_a_compiler_that_fails_gives_no_peak_instead_of_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "false")  # exits 1 without building anything
    monkeypatch.setenv("SEQJAX_CACHE_DIR", str(tmp_path))
    fma_peak._library.cache_clear()
    try:
        assert fma_peak.fma_peak_gflops(1, seconds=0.01, repeats=1) is None
        assert list(tmp_path.iterdir()) == []  # nothing half-built left behind
    finally:
        fma_peak._library.cache_clear()
