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
def test_the_built_loop_gives_a_rate_for_one_thread_and_every_core():
    assert fma_peak.fma_peak_gflops(1, seconds=0.01, repeats=1) > 0
    result = fma_peak.main(["--seconds", "0.01"])
    assert result["cores"] == fma_peak.cores() and result["all_cores"] > 0


class _FakeLoop:
    """A loop whose timing is known: 2 ns an iteration whatever the thread count (each thread runs them all
    at once), 768 FLOPs an iteration; it records the iteration counts it was asked for."""

    def __init__(self):
        self.calls = []

    def seqjax_fma_seconds(self, threads, iterations):
        self.calls.append((threads, iterations))
        return iterations * 2e-9

    def seqjax_fma_flops_per_iteration(self):
        return 768


@pytest.mark.parametrize("threads", [1, 3])
def test_rate_counts_every_thread_and_times_about_the_seconds_asked(monkeypatch, threads):
    loop = _FakeLoop()
    monkeypatch.setattr(fma_peak, "_library", lambda: loop)
    gflops = fma_peak.fma_peak_gflops(threads, seconds=0.1, repeats=3)
    assert gflops == pytest.approx(threads * 768 / 2e-9 / 1e9)  # threads x FLOPs an iteration / time an iteration
    timed = loop.calls[-3:]
    assert all(t == threads for t, _ in loop.calls)
    assert len({n for _, n in timed}) == 1 and timed[0][1] * 2e-9 == pytest.approx(0.1, rel=1e-3)


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
