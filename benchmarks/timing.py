"""Interleaved timing: every contender runs in each round, in a rotating order; medians after compilation.

On a shared 2-core machine one slow moment must not land on one contender only, so rounds interleave
the contenders and the median of the rounds is reported. The first call (trace, compile, first run) is
timed apart and reported as compile time.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable, NamedTuple

import numpy as np


class Contender(NamedTuple):
    """One framework's way of doing a task.

    `run()` does the work once and returns something to wait on; `result()` returns the outputs
    checked against the other contenders (NumPy arrays in seqjax's layout, keyed by name).
    """

    name: str
    run: Callable[[], Any]
    result: Callable[[], dict]
    how: str = ""


class Timing(NamedTuple):
    """Per-call milliseconds: median over rounds, the quartiles, and the first (compiling) call; and the
    median process CPU time per call (above the wall time where work ran on both cores; on a loaded
    machine the steadier measure)."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    first_call_ms: float
    compile_ms: float
    rounds: int
    calls_per_round: int
    cpu_median_ms: float


def wait(value):
    """Block until `value` (a pytree of jax arrays, torch tensors or NumPy arrays) is computed."""
    import jax

    for leaf in jax.tree.leaves(value):
        if hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()
        elif getattr(leaf, "is_cuda", False):  # a torch tensor on a GPU: its kernels run asynchronously
            import torch

            torch.cuda.synchronize(leaf.device)
    return value


def _time_calls(run, calls: int) -> tuple[float, float]:
    """Seconds per call of `calls` back-to-back calls: wall time and process CPU time."""
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        out = run()
    wait(out)
    return (time.perf_counter() - start) / calls, (time.process_time() - cpu) / calls


def first_calls(contenders: list[Contender]) -> dict[str, float]:
    """Seconds of each contender's first `run` (tracing and compiling included). Call before anything else."""
    first = {}
    for c in contenders:
        start = time.perf_counter()
        wait(c.run())
        first[c.name] = time.perf_counter() - start
    return first


def measure(contenders: list[Contender], *, rounds: int = 15, min_block_s: float = 0.02,
            pause_s: float = 0.005, first: dict | None = None, budget_s: float | None = None,
            min_rounds: int = 5) -> dict[str, Timing]:
    """Times each contender's `run` in `rounds` interleaved rounds of >= `min_block_s` each.

    `first`: the `first_calls` result when already taken (else taken here). `pause_s` between blocks
    lets another framework's spinning worker threads go idle. `budget_s`: fewer rounds (not below
    `min_rounds`) when `rounds` of them would take longer (the largest sizes).
    """
    first = first_calls(contenders) if first is None else first
    calls, round_s = {}, 0.0
    for c in contenders:  # one more warm call, also to size the blocks
        per_call, _ = _time_calls(c.run, 1)
        calls[c.name] = max(1, min(1000, math.ceil(min_block_s / max(per_call, 1e-6))))
        round_s += per_call * calls[c.name] + pause_s
    if budget_s is not None:
        rounds = max(min(rounds, min_rounds), min(rounds, int(budget_s / max(round_s, 1e-9))))
    samples = {c.name: [] for c in contenders}
    for r in range(rounds):
        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
        for c in order:
            time.sleep(pause_s)
            wait(c.run())  # untimed: the block then times this contender's steady state, not the switch
            samples[c.name].append(_time_calls(c.run, calls[c.name]))
    out = {}
    for c in contenders:
        s, cpu = (np.asarray(a) * 1e3 for a in zip(*samples[c.name]))
        med = float(statistics.median(s))
        out[c.name] = Timing(med, float(np.percentile(s, 25)), float(np.percentile(s, 75)),
                             first[c.name] * 1e3, max(0.0, first[c.name] * 1e3 - med), rounds, calls[c.name],
                             float(statistics.median(cpu)))
    return out


def compare(results: dict[str, dict], reference: str, *, rtol: float = 2e-3, atol: float = 1e-5) -> dict:
    """Largest difference per output between each contender and `reference`; raises if any is too large.

    An output matches when `max|a - b| <= atol + rtol * max|b|` (float32 summation order differs).
    """
    ref = results[reference]
    report = {}
    for name, res in results.items():
        if name == reference:
            continue
        diffs = {}
        for key, want in ref.items():
            if key not in res:
                raise AssertionError(f"{name} gives no {key!r} to compare with {reference}")
            got, want = np.asarray(res[key], np.float64), np.asarray(want, np.float64)
            if got.shape != want.shape:
                raise AssertionError(f"{name} {key!r} has shape {got.shape}; {reference} has {want.shape}")
            diff = float(np.max(np.abs(got - want))) if want.size else 0.0
            scale = float(np.max(np.abs(want))) if want.size else 0.0
            if not diff <= atol + rtol * scale:
                raise AssertionError(f"{name} {key!r} differs from {reference} by {diff:.3g} (scale {scale:.3g})")
            diffs[key] = diff
        report[name] = diffs
    return report
