"""How a fast path runs on this backend and size: unrolling, hoisting, custom VJP, chunked recomputation.

Chosen by measurement (BENCHMARKS.md, "attempts"); `plan_for` is the single place that decides. On
XLA:CPU the per-step cost and fresh memory are the walls: every call allocates its temporaries anew and
touching new pages is slow there, so the backward pass works chunk by chunk, and for very long or wide
problems recomputes the forward pass chunk by chunk rather than keeping every step's gates. Measured on
a 2-core x86 CPU. On GPU nothing here was measured (no GPU was available): the GPU plan follows the usual
practice (hoist the input projection, keep all residuals) and is marked unmeasured.

Whether fresh memory is expensive depends on the machine: where the kernel backs large allocations
with transparent huge pages (`huge_pages()`), first touches cost ~512 times fewer page faults, and
keeping every step's residuals is the faster plan up to a larger budget.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import NamedTuple

import jax


class Plan(NamedTuple):
    """`unroll`: steps per loop iteration. `hoist`: the input projection of all steps as one matmul before
    the loop. `custom_vjp`: the hand-written backward pass of `seqjax.fast.engine`. `chunk`: steps per
    chunk of that backward pass (0: one chunk); `recompute`: keep only each chunk's starting carry and
    recompute its forward pass in the backward pass, instead of keeping every step's residuals.
    `fuse_xh`: one matmul of `[x_t, h]` per step instead of two (cells whose gates add the two).
    `batch_major`: the forward pass writes its outputs `[B, T, H]` in the loop (no transpose after).
    `use_reference`: run the cell's reference loop instead of the engine (where that measured faster), unless
    the native kernels run. `native`: evaluate (no gradient) with the native CPU kernels where they are
    available (`seqjax.fast.native`; LSTM, GRU), on at most `native_eval_threads` cores (0: all; the closed
    loop too), a head that is one linear `dense` inside them; `native_head`: also when another `chain` head
    follows the layer (the kernel then writes the layer's outputs, which the engine's loop with the head does
    not); `native_train`: under a gradient, the native kernels' forward and backward passes (with or without
    a head), on at most `native_threads` cores; `native_keep_gates`: there the LSTM's forward pass also keeps
    every step's gates, which its backward pass then reads instead of recomputing; `native_train_head`: there a
    head that is one linear `dense` runs inside the training kernels too (its outputs formed in the forward
    pass, their gradient taken in by the backward pass, which writes no gradient of the layer's outputs);
    `native_closed_loop`: `sj.rollout` of the layer and a dense head, fed back unchanged, on the native
    closed-loop kernel (and the layer in a stacked one, `stack_closed_loop_threads`); `native_strassen`: the
    LSTM's evaluation and one-layer closed-loop kernels form each step's `h w_h` by one level of Strassen's
    product (the same maths in other float32 roundings)."""

    unroll: int = 1
    hoist: bool = False
    custom_vjp: bool = True
    chunk: int = 0
    recompute: bool = False
    fuse_xh: bool = False
    batch_major: bool = True
    use_reference: bool = False
    native: bool = False
    native_threads: int = 0
    native_eval_threads: int = 0
    native_head: bool = False
    native_train: bool = False
    native_keep_gates: bool = False
    native_train_head: bool = False
    native_closed_loop: bool = False
    native_strassen: bool = False


# XLA:CPU allocates one temporary buffer per call; while it stays under glibc's largest mmap threshold
# (32 MB) its pages are reused from call to call, above it every call page-faults all of it again
# (measured: 24 MB of temporaries cost 3 ms a call, 34 MB cost 16-26 ms). Chunking the backward pass keeps
# `dz` for one chunk only, which brings medium sizes under the threshold. Past it, recomputing each
# chunk's forward pass in the backward pass measured as fast as keeping every step's gates or faster
# (train step: B 64, T 200, H 128: 61 vs 64 ms; long 149 vs 169; many 223-231 vs 237; large within the
# noise, 307-345 vs 321) with a quarter of the memory, while at medium (26 MB) keeping them is faster
# (23 vs 30 ms).
# With transparent huge pages behind large allocations the page faults mostly go away, and keeping the
# residuals (backward in chunks) measured 2-22% faster than recomputing at large, many and long, LSTM
# and GRU (train step, two identical contenders each, THP `always`: large LSTM 255-267 vs 293-299 ms,
# many LSTM 133-144 vs 168-170; BENCHMARKS.md); past `_KEEP_BYTES_HUGE` memory decides.
# When recomputing, chunks of one step measured faster for LSTM and GRU from a batch of 64: each
# iteration of the backward loop runs one step's forward again and then its backward (the inner loops of
# one step vanish), and the weight gradients are one matmul per step, with rows enough at that batch.
# The forward pass then keeps every step's carry but `h` (LSTM: `c`; GRU: nothing, `h` is the output).
# Train step against the chunked recompute plan, one process: many LSTM 1.28x, GRU 1.19x; large LSTM 1.06x,
# GRU 1.01-1.17x; B 256 T 100 H 128: 1.15-1.3x; B 128 T 400 H 128: 1.12-1.34x; B 64 T 400 H 256: LSTM
# 1.01-1.08x, GRU 1.22x; smaller batches are slower (B 32 T 1000 H 128: 0.66-0.72x; long, B 16: 0.55x).
# With huge pages the kept plan measured as fast or faster where it applies (large GRU 185-196 vs 213 ms;
# large and many LSTM alike), so it stays the plan there.
_STEP_CHUNKS_BATCH = 64
_KEEP_BYTES = 32 * 2**20
_KEEP_BYTES_HUGE = 256 * 2**20
_SMALL_BYTES = 4 * 2**20
_CHUNK_BYTES = 16 * 2**20
# One matmul of `[x_t, h]` per step measured as fast as two or faster, except in one window of XLA:CPU's
# matmul (YNNPACK): with 512 columns (LSTM, H = 128), a contraction of 129-160 rows (H plus 1-32 input
# features) runs at 205-270 GFLOP/s against 270-350 for 128 rows or fewer, or 176 or more (a step's
# matmul alone, B 256 and 1,024); from a batch of 256 two matmuls, `h w_h` over 128 rows and `x_t w_x`
# (independent of each other), win: LSTM forward, H 128, F 8, T 50, B 256 / 512 / 1,024, two identical
# contenders each: 8.7, 8.8 / 17.6, 17.6 / 33.8, 33.9 ms against 12.2, 12.6 / 21.0, 20.5 / 38.2, 37.6;
# train step at B 1,024: 150, 151 vs 157, 164 ms; B 256, F 1 / 2 / 4 / 32: 8.5, 8.5 / 11.0-13.5 /
# 12.3-12.6 / 10.6 ms against 10.9, 11.2 / 13.5-15.9 / 13.4-15.7 / 13.0 (F 1 with the engine's empty second
# feature, `_common.with_empty_feature`; before it the one-row `x_t w_x` was slow: 17.1-20.4 ms). Not at B 128
# (7.1-7.5 vs 8.0-8.3 ms), nor at H 64, 96 or 256 (B 512-1,024: 7.5 vs 7.5-8.0, 12.2-12.7 vs 13.3,
# 21.5-21.8 vs 25.0-25.2 ms), where one matmul stays as fast or faster.
_SPLIT_XH_BATCH = 256
_SPLIT_XH_COLUMNS = 512
_SPLIT_XH_ROWS = (129, 160)
GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}
KEPT = {"lstm": 6, "gru": 5, "simple_rnn": 1}  # `[B, H]` arrays kept per step (carry and residuals)
# carry entries besides `h`, kept for every step when chunks are one step; the cells this was measured for
CARRIED = {"lstm": 1, "gru": 0}


def thp_mode(path: str = "/sys/kernel/mm/transparent_hugepage/enabled") -> str | None:
    """The kernel's transparent-huge-page mode ("always", "madvise", "never"), None where unknown."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def _glibc_hugetlb(tunables: str) -> str | None:
    """The value of `glibc.malloc.hugetlb` in a `GLIBC_TUNABLES` string (`name=value:name=value`)."""
    for entry in tunables.split(":"):
        name, _, value = entry.partition("=")
        if name.strip() == "glibc.malloc.hugetlb":
            return value.strip()
    return None


def _thp_disabled_here(path: str = "/proc/self/status") -> bool:
    """Whether this process has THP switched off (`prctl(PR_SET_THP_DISABLE)`: `THP_enabled: 0`)."""
    try:
        with open(path) as f:
            return any(line.split(":", 1)[1].strip() == "0" for line in f if line.startswith("THP_enabled:"))
    except OSError:
        return False


@functools.lru_cache(maxsize=None)
def kernel_huge_pages() -> bool:
    """Whether the native kernels' large outputs get transparent huge pages: they ask for them (`madvise`), so
    THP `always` or `madvise` (Linux), and the process has not switched THP off. Read once per process."""
    return sys.platform.startswith("linux") and thp_mode() in ("always", "madvise") and not _thp_disabled_here()


@functools.lru_cache(maxsize=None)
def huge_pages() -> bool:
    """Whether large allocations of this process get transparent huge pages (Linux only).

    True when the kernel's THP mode is `always`, or `madvise` with glibc asked to advise its large
    allocations (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, glibc >= 2.35), and the process has not
    switched THP off. Read once per process.
    """
    if not sys.platform.startswith("linux") or _thp_disabled_here():
        return False
    mode = thp_mode()
    if mode == "always":
        return True
    return mode == "madvise" and _glibc_hugetlb(os.environ.get("GLIBC_TUNABLES", "")) == "1"


# The native kernel (seqjax.fast.native) against the engine's forward loop, `sj.scan` evaluated, LSTM, ms
# (interleaved medians, one process; layer / chain(lstm, dense)): B 32 T 50 F 2 H 32 0.30 vs 0.13 / 0.30 vs
# 0.19; medium 7.8 vs 5.3 / 7.7 vs 4.3; large 61 vs 50 / 61 vs 81; long 39 vs 24 / 41 vs 21; B 256 T 100
# H 128 18 vs 16 / 19 vs 16; many 92 vs 85 / 64 vs 115; B 5 T 7 F 3 H 20 0.022 vs 0.024-0.036. With a head
# the engine's loop writes only the head's outputs while the kernel writes the layer's `[B, T, H]` first,
# fresh memory that costs more than the loop saves past ~20 MB (large 26 MB, many 52 MB). Alone on the
# machine, one thread instead of all was slower from the small size up (0.20 vs 0.13 ms at small, 92 vs 50 at
# large); beside another busy process small steps are faster on one (`_NATIVE_SHARED_MACS` below).
# Training on the native kernels (forward keeping every step's `c`, backward recomputing each step's gates,
# one call each) against the engine's passes, train step of `chain(lstm, dense)`, two identical contenders
# each (`benchmarks.attempts --what native_train`): small 0.80-0.90 vs 1.02-1.04 ms; medium 15.5-21.0 vs
# 23.2; large 204 vs 230-232; long 98-100 vs 121-124; many 126-128 vs 135. The kernels keep the outputs
# and every step's `c` (`2 * 4 * B * T * H` bytes); past `_NATIVE_TRAIN_BYTES` the engine's plans, which
# recompute in chunks in bounded memory, train instead.
# The closed-loop kernel (`sj.rollout` of `chain(lstm, dense)`, fed back unchanged: the step and the head in
# one call) against the loop over `step`, 200 steps, ms: B 4 F 3 H 8 0.055 vs 0.50; B 5 F 3 H 20 0.12 vs
# 0.56; B 16 F 4 H 16 0.21 vs 0.72; small 0.54 vs 1.14; medium 6.4 vs 15.3 (before its projection folding,
# which took small to 0.39-0.41 and medium to 5.7). Below `_NATIVE_MACS` one thread
# (B 5 F 3 H 20: 0.21 vs 0.27 ms on all; B 16 F 4 H 16: 0.21 vs 0.21); from it all (B 8 F 16 H 64: 0.38 vs
# 0.56 on one; small 0.53 vs 0.80).
# The GRU kernels (the same kernels with GRU rows; training keeps only the outputs) against the engine's train
# step or, at small, the reference loop (which the plan ran there), `chain(gru, dense)`, two identical contenders
# each (`benchmarks.attempts --what native_train`), ms: small 0.94-1.25 vs 1.38-1.40 (engine 1.95-2.05); medium
# 22.8-25.3 vs 28.1-29.5; large 265-289 vs 352-398; long 122-138 vs 187-190; many 168 vs 182 (a slow state of
# the host: its `jnp.dot` peak read 185 GFLOP/s, not ~400). Closed loop, 200 steps, against the loop over `step`:
# B 4 F 3 H 8 0.12 vs 0.42 ms; B 16 F 4 H 16 0.36 vs 0.56; small 0.84 vs 1.28; medium 8.3 vs 15.3.
# One core below `_NATIVE_SHARED_MACS`: the threads of a call wait for each other twice a step, and where
# another process keeps the second core busy (PyTorch's OpenMP threads spin after each of its calls: the bench
# interleaves them) a small step's wait costs more than its work. The bench's small config (139k multiply-adds a
# step), PyTorch among the peers, one core vs two, ms: LSTM train 0.92 vs 1.73, forward 0.33 vs 0.44, rollout
# 1.89 vs 1.93; GRU train 1.15 vs 3.12 (3.85 in another run; with `OMP_WAIT_POLICY=PASSIVE` 1.9, without
# PyTorch 1.5). Measured at small only; from medium (4.5M) both cores. Since then the forward passes split a
# wide batch by chunks of rows with no barrier (`kernels/lstm_cpu.cc`), and the backward passes where their
# weights stay in L2; small stays on one core (not measured again: a ~0.2 ms call would wait out a paused
# thread's chunk).
# The LSTM's training kernels keeping every step's gates (4x the outputs' memory, advised onto huge pages)
# against recomputing them in the backward pass, train step, two identical contenders each, PyTorch among
# them, ms: large 267-275 vs 295-302 (and 270-313 vs 313-338 in a slower state), medium 22.0-22.3 vs 23.0-23.1,
# many 157-168 vs 166-171, long 122-134 vs 120-128. Without huge pages the kernel's first touches of that
# much fresh memory cost as much as the recomputation (72c06bd), so the plan keeps them only with THP.
# Training with a linear dense head inside the kernels (`native_train_head`: the forward pass forms the head's
# outputs, the backward pass takes their gradient and forms each step's `h` gradient and the head's weight
# gradient itself) against the head over all steps in XLA (its outputs, the `[T, B, H]` gradient of the layer's
# outputs, the transposes between), the bench's train step, two identical contenders each, one process, ms
# (a scratch run of `benchmarks.seqjax_tasks.train`): LSTM medium 20.9-21.2 vs 25.8-26.8, large 294-310 vs
# 311-327, long 137-142 vs 149-150, many 171-173 vs 184-188, small 1.11 vs 1.12-1.15; GRU medium 19.6-20.0 vs
# 25.1-27.6, large 260-261 vs 271-274, but small 1.21-1.22 vs 1.11-1.14 (one thread; its 2 outputs padded to 16
# columns in the kernel); `benchmarks.attempts --what train_head` later: medium LSTM 20.1-20.2 vs 21.5-22.6, GRU
# 18.9-19.2 vs 20.3-20.6; large LSTM 298 vs 301-322, GRU 285-301 vs 304-330. From `_NATIVE_SHARED_MACS`.
_NATIVE_MACS = 2**16  # a step's multiply-adds from which the kernel is faster: B * 4H * (F + H)
_NATIVE_SHARED_MACS = 2**20
# Evaluation and closed loops on all cores also below `_NATIVE_SHARED_MACS` where a call does at least
# `_NATIVE_SHARED_CALL_MACS` multiply-adds (steps x a step's): the forward kernels split a wide batch by chunks
# of rows with no barrier, so a long call pays for the second core once, not every step, while the training
# kernels' backward pass still meets at every step (a narrow batch's forward meets too: B 8 F 16 H 64, 200
# closed-loop steps, 33M, measured 0.38 ms on all vs 0.56 on one; below `_NATIVE_MACS` one core, whose
# steps are too short for any barrier). The bench's small rollout (`chain(lstm, dense)`, a 100-step warm-up,
# 13.9M multiply-adds, then 200 closed-loop steps, 27.9M), PyTorch among the peers, ms: LSTM 1.02-1.44 with
# both calls on all cores (five runs), 1.46-1.53 with the closed loop alone (three), 1.73-2.07 with neither
# (six; 1.90-2.14x the fastest peer in the two full bench runs of the small config against 1.30-1.49x); GRU
# 0.90-1.41, 1.22-1.40, 1.61-1.74. Its 50-step forward (7.0M) stays on one core: on all, 0.33-0.45 vs
# 0.33-0.36 ms. Called alone after an idle pause (no block of calls), the second core's wake-up outweighs the
# split at these sizes (the small layer's forward, T 25-200, ms: on all 0.49-1.81, on one 0.38-1.55), and
# after calls of PyTorch's (its threads spinning) as well.
_NATIVE_SHARED_CALL_MACS = 2**23
# The LSTM closed loop's folded steps by one level of Strassen's product (Winograd's form: 7 products of half the
# depth where the plain step takes 8; `kernels/lstm_cpu.cc`, `strassen_rows`) against the plain step, the kernel
# call alone, 200 steps, interleaved medians, ms (both cores): B 64 F 8 H 128 9.49 vs 10.27 (1.08x); large (B 128 F
# 32 H 256) 65.3 vs 70.6 (1.08x); many (B 1,024 F 8 H 128) 143-148 vs 150-164 (1.04-1.11x over three runs); B 256
# F 8 H 128 1.05x; B 64 F 8 H 256 1.11x; B 128 F 8 H 512 1.12x; but B 32 F 2 H 32 0.97x, B 48 F 4 H 64 1.00x,
# B 512 F 16 H 64 1.01x: from `_STRASSEN_HIDDEN` units. The kernel itself keeps the plain step where the batch
# gives fewer than two of its chunks (pairs of 4-6-row blocks) to each thread (B 16 F 8 H 256: 0.59x, one chunk).
# (`python -m benchmarks.attempts --config large --what strassen` times the kernel call alone and the bench's
# rollout both ways: large 65.4, 65.5 vs 71.7, 71.4 ms and 103, 105 vs 111, 111.)
# Its float32 error against float64 measured 1.8-2.7x the plain product's; `SEQJAX_STRASSEN=0` switches it off.
_STRASSEN_HIDDEN = 128
_NATIVE_HEAD_BYTES = 20 * 2**20
_NATIVE_TRAIN_BYTES = 64 * 2**20
NATIVE_KEPT = {"lstm": 2, "gru": 1}  # `[B, T, H]` arrays the native training kernels keep (outputs, LSTM's `c`)


def strassen_allowed() -> bool:
    """Whether plans may take Strassen's product: unless `SEQJAX_STRASSEN=0` (read when a plan is made)."""
    return os.environ.get("SEQJAX_STRASSEN", "1") != "0"


def native_choice(batch: int, time: int, features: int, hidden: int, cell: str) -> dict:
    """The `native` fields of the CPU plan: the kernels for LSTM and GRU layers from `_NATIVE_MACS` per step;
    with a head while the layer's outputs stay under `_NATIVE_HEAD_BYTES`; training while what they keep stays
    under `_NATIVE_TRAIN_BYTES`, an LSTM's gates kept too (twice that memory again) where its kernels get huge
    pages, and a linear dense head inside them from `_NATIVE_SHARED_MACS`; closed loops at every size; an LSTM's
    evaluation and closed loop by Strassen's product from `_STRASSEN_HIDDEN` units (unless `strassen_allowed()`
    says no); on one core below `_NATIVE_SHARED_MACS`, except evaluation and closed loops of `time` steps that do
    at least `_NATIVE_SHARED_CALL_MACS` multiply-adds in all (from `_NATIVE_MACS` a step)."""
    if cell not in NATIVE_KEPT:
        return {}
    macs = batch * 4 * hidden * (features + hidden)
    if macs < _NATIVE_MACS:
        return {"native_closed_loop": True, "native_threads": 1, "native_eval_threads": 1}
    eval_threads = native_eval_threads(macs, time)
    outputs = 4 * batch * time * hidden
    train = NATIVE_KEPT[cell] * outputs <= _NATIVE_TRAIN_BYTES
    return {"native": True, "native_head": outputs <= _NATIVE_HEAD_BYTES, "native_train": train,
            "native_keep_gates": train and cell == "lstm" and kernel_huge_pages(),
            "native_train_head": train and macs >= _NATIVE_SHARED_MACS, "native_closed_loop": True,
            "native_strassen": cell == "lstm" and hidden >= _STRASSEN_HIDDEN and strassen_allowed(),
            "native_threads": 1 if macs < _NATIVE_SHARED_MACS else 0, "native_eval_threads": eval_threads}


def native_eval_threads(macs: int, time: int) -> int:
    """Cores (0: all) for a native evaluation or closed-loop call of `time` steps of `macs` multiply-adds each:
    all from `_NATIVE_SHARED_MACS` a step or `_NATIVE_SHARED_CALL_MACS` a call (from `_NATIVE_MACS` a step), else
    one."""
    shared = macs >= _NATIVE_SHARED_MACS or (macs >= _NATIVE_MACS and macs * time >= _NATIVE_SHARED_CALL_MACS)
    return 0 if shared else 1


# The stacked closed loop (`chain(lstm | gru, .., dense)` in `sj.rollout`, one kernel call) against the loop over
# `step`, two layers, 200 steps, interleaved in one process, ms; a layer's multiply-adds a step counted as the
# kernels do them, B x blocks x H x (F + H), with 4 gate blocks for an LSTM and 3 for a GRU. The kernel ahead:
# LSTM B 32 F 8 H 128 19.8 vs 33.4, B 64 F 8 H 128 39-46 vs 60-61 (three layers 54 vs 96), B 128 F 8 H 128 74
# vs 136 (three layers 111 vs 223), B 256 F 8 H 64 45 vs 88, B 32 F 2 H 64 6.1 vs 9.4, B 64 F 8 H 192 (largest
# layer 18.9M) 81 vs 103, B 96 F 8 H 160 (19.7M) 92 vs 105; GRU B 128 F 8 H 128 55 vs 97, B 64 F 8 H 256 (25.2M)
# 101 vs 110, B 256 F 8 H 128 (25.2M) 109 vs 119; even at LSTM B 192 F 8 H 128 (25.2M) 114 vs 111. Where a
# layer's step is larger XLA:CPU runs its matmul on both cores near the matmul peak, above what the kernel's
# steps reach, and the loop is as fast or faster: GRU B 128 F 8 H 192 (28.3M) 113 vs 112, B 320 F 8 H 128
# (31.5M) 132 vs 123, B 96 F 8 H 256 (37.7M) 148 vs 135, B 128 F 8 H 256 (50.3M) 193 vs 171; LSTM B 64 F 8
# H 256 (33.6M) 135 vs 131, B 256 F 8 H 128 (33.6M, 100 steps) 77 vs 74, the bench's large (B 128 F 32 H 256)
# 257-284 vs 245-305 over three runs, its many (B 1024 F 8 H 128) 548-578 vs 487-594.
_NATIVE_STACK_LAYER_MACS = 25 * 2**20


def stack_closed_loop_threads(batch: int, time: int, layers) -> int | None:
    """The cores (`native_eval_threads`) for a stacked closed loop of `time` steps on the native kernel
    (`seqjax.fast.native.stack_closed_loop`), `layers` its `(features, hidden, cell)` bottom first ("lstm" or
    "gru"): a step's multiply-adds are those of all its layers' gate blocks. None where a layer's step reaches
    `_NATIVE_STACK_LAYER_MACS`, where the loop over `step` measured as fast."""
    macs = [batch * GATES[cell] * hidden * (features + hidden) for features, hidden, cell in layers]
    return None if max(macs) >= _NATIVE_STACK_LAYER_MACS else native_eval_threads(sum(macs), time)


def fuse_xh(batch: int, features: int, hidden: int, cell: str = "lstm") -> bool:
    """Whether a step's input and recurrent matmuls run as one `[x_t, h] @ [w_x; w_h]` (cells whose gates
    add the two) rather than two; one, except in XLA:CPU's slow window described above `_SPLIT_XH_BATCH`."""
    rows, columns = features + hidden, GATES[cell] * hidden
    slow = columns == _SPLIT_XH_COLUMNS and _SPLIT_XH_ROWS[0] <= rows <= _SPLIT_XH_ROWS[1]
    return not (slow and batch >= _SPLIT_XH_BATCH)


def chunk_steps(batch: int, time: int, features: int, hidden: int, cell: str = "lstm") -> int:
    """Steps per chunk of the backward pass: ~√T (chunks of 5 to 20 steps measured alike at T = 100 and
    200), fewer where one chunk's buffers would pass 16 MB (wide batches; many: 2 steps)."""
    step_bytes = 4 * batch * ((KEPT[cell] + 6) * hidden + features)  # one step's buffers in a chunk
    return max(2, min(round(time ** 0.5), _CHUNK_BYTES // step_bytes))


def plan_for(batch: int, time: int, features: int, hidden: int, cell: str = "lstm",
             backend: str | None = None, huge: bool | None = None) -> Plan:
    """The measured-best plan for a `[time, batch, features] -> hidden` layer of `cell` on `backend`.

    `cell`: "lstm", "gru" or "simple_rnn" (how many `[B, H]` arrays a step keeps for the backward pass).
    `huge`: whether large allocations get huge pages (None: `huge_pages()`).
    """
    backend = backend or jax.default_backend()
    if backend != "cpu":
        return Plan(unroll=1, hoist=True, custom_vjp=True, chunk=0)  # GPU/TPU: unmeasured here
    fused = fuse_xh(batch, features, hidden, cell)
    native = native_choice(batch, time, features, hidden, cell)
    # kept arrays, plus the outputs and their gradient, which the backward pass of a layer also holds
    keep_bytes = 4 * batch * time * (KEPT[cell] + 2) * hidden
    if keep_bytes <= _SMALL_BYTES:
        # small GRU: JAX's own scan VJP of the reference loop measured 1.1x faster than this backward pass
        # (`use_reference` yields to the native kernels where they run)
        return Plan(use_reference=cell == "gru", chunk=0, fuse_xh=fused, **native)
    chunk = chunk_steps(batch, time, features, hidden, cell)
    huge = huge_pages() if huge is None else huge
    if keep_bytes <= (_KEEP_BYTES_HUGE if huge else _KEEP_BYTES):
        return Plan(chunk=chunk, fuse_xh=fused, **native)  # `dz` for one chunk at a time
    carried_bytes = 4 * batch * time * hidden * CARRIED.get(cell, 0)
    if cell in CARRIED and batch >= _STEP_CHUNKS_BATCH and carried_bytes <= _KEEP_BYTES_HUGE:
        chunk = 1  # each step's forward again right before its backward
    return Plan(chunk=chunk, recompute=True, fuse_xh=fused, **native)
