"""The native CPU kernels: an LSTM or GRU layer's forward and backward passes over a whole sequence, each one XLA
FFI custom call.

XLA:CPU runs a loop body's operations one after another on one core, ~0.5 µs each, and a step's small
matmul there does not use the second core (BENCHMARKS.md, "Why"). `kernels/lstm_cpu.cc` runs every step
in one call and splits it over the cores: by chunks of batch rows where the batch has enough rows (no
barrier), by hidden units otherwise (its header says how). It is built on
first use with the machine's C++ compiler (`CXX`, else `c++`; C++17, `-O3 -march=native`, then the flags in
`SEQJAX_NATIVE_FLAGS`, such as `-mno-avx512f` to build for AVX2 on an AVX-512 machine) against the FFI
headers jaxlib ships, into a cache folder (`SEQJAX_CACHE_DIR`, else `$XDG_CACHE_HOME/seqjax`, else
`~/.cache/seqjax`) keyed by the source, the compiler, the flags, jaxlib and the CPU, and loaded with `ctypes`.
Its vector code is blocked for the registers of the instruction set it is built for (AVX-512, AVX2, NEON).

It is a fast path, never a requirement: where it cannot be built (no compiler, another OS) or is switched
off (`SEQJAX_NATIVE=0`), `available()` is False, `unavailable_reason()` says why, and the LSTM runs the
engine's loop (`seqjax.fast.engine`), with the same numbers to float32 tolerance. Evaluation runs
`lstm_forward` (`lstm_forward_head` with a dense head inside); training runs `lstm_forward_train` (which
also keeps every step's `c`, and its gates where the plan says) and `lstm_backward` (which reads the kept
gates or recomputes them from the kept outputs); `sj.rollout` of an LSTM with a dense head runs
`lstm_closed_loop`, of a stack of LSTM and GRU layers with a dense head `stack_closed_loop`; training a
`chain(lstm, dense)` runs the dense inside both training kernels
(`layer_train(..., head=)`, `layer_backward_head`). The GRU (`reset_after`, the Keras/PyTorch/Flax form) has the
same kernels without `c` (`GRU`; `gru_forward`, also training's forward pass since the backward pass needs only
the outputs, and `gru_backward`), its weights mapped to four gate blocks (`_gru_blocks`). `layer_forward`,
`layer_train`, `layer_backward`, `layer_backward_head` and `layer_closed_loop` run either cell's kernels
(`Kernels`). `SEQJAX_NATIVE_THREADS` caps the
cores they use.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

SOURCE = Path(__file__).parent / "kernels" / "lstm_cpu.cc"
TARGET = "seqjax_lstm_forward"
TARGET_TRAIN = "seqjax_lstm_forward_train"
TARGET_BACKWARD = "seqjax_lstm_backward"
TARGET_CLOSED_LOOP = "seqjax_lstm_closed_loop"
TARGET_HEAD = "seqjax_lstm_forward_head"
TARGET_GRU = "seqjax_gru_forward"
TARGET_GRU_BACKWARD = "seqjax_gru_backward"
TARGET_GRU_CLOSED_LOOP = "seqjax_gru_closed_loop"
TARGET_GRU_HEAD = "seqjax_gru_forward_head"
TARGET_TRAIN_HEAD = "seqjax_lstm_forward_train_head"
TARGET_BACKWARD_HEAD = "seqjax_lstm_backward_head"
TARGET_GRU_TRAIN_HEAD = "seqjax_gru_forward_train_head"
TARGET_GRU_BACKWARD_HEAD = "seqjax_gru_backward_head"
TARGET_STACK_CLOSED_LOOP = "seqjax_stack_closed_loop"
_SYMBOLS = {TARGET: "SeqjaxLstmForward", TARGET_TRAIN: "SeqjaxLstmForwardTrain",
            TARGET_BACKWARD: "SeqjaxLstmBackward", TARGET_CLOSED_LOOP: "SeqjaxLstmClosedLoop",
            TARGET_HEAD: "SeqjaxLstmForwardHead", TARGET_GRU: "SeqjaxGruForward",
            TARGET_GRU_BACKWARD: "SeqjaxGruBackward", TARGET_GRU_CLOSED_LOOP: "SeqjaxGruClosedLoop",
            TARGET_GRU_HEAD: "SeqjaxGruForwardHead", TARGET_TRAIN_HEAD: "SeqjaxLstmForwardTrainHead",
            TARGET_BACKWARD_HEAD: "SeqjaxLstmBackwardHead", TARGET_GRU_TRAIN_HEAD: "SeqjaxGruForwardTrainHead",
            TARGET_GRU_BACKWARD_HEAD: "SeqjaxGruBackwardHead", TARGET_STACK_CLOSED_LOOP: "SeqjaxStackClosedLoop"}
# the kernels that take `strassen` (`layer_forward`, `layer_closed_loop`): the LSTM's evaluation and closed loop
_STRASSEN_TARGETS = (TARGET, TARGET_HEAD, TARGET_CLOSED_LOOP)

UNITS = 16  # hidden units per group: the kernel's packed weights are [groups, F + H, 4 * UNITS]
COMPILE_FLAGS = ("-O3", "-std=c++17", "-pthread")  # then arch_flag() and extra_flags()
_SHARED_FLAGS = ("-shared", "-fPIC")
_registered: list = []  # the library registered with XLA (a `ctypes.CDLL`)


def cache_dir() -> Path:
    """Where built kernels are kept."""
    if os.environ.get("SEQJAX_CACHE_DIR"):
        return Path(os.environ["SEQJAX_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "seqjax"


def cpu_signature() -> str:
    """The CPU's model and feature flags (Linux), else the processor name: `-march=native` builds for it."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("flags", "Features", "model name"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def compiler() -> str | None:
    """The C++ compiler kernels are built with: `CXX`, else the first of c++, g++, clang++ found; or None."""
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


def arch_flag() -> str:
    """The flag that builds for this machine's CPU: `-march=native`, or `-mcpu=native` on ARM."""
    return "-mcpu=native" if platform.machine().lower() in ("arm64", "aarch64") else "-march=native"


def extra_flags() -> tuple[str, ...]:
    """The compiler flags in `SEQJAX_NATIVE_FLAGS` (split as a shell would), added after `-march=native`."""
    return tuple(shlex.split(os.environ.get("SEQJAX_NATIVE_FLAGS", "")))


def build_shared(cxx: str, source: Path, include_dirs=(), key_parts=()) -> Path:
    """The shared library `source` builds into with `cxx` for this CPU (`-O3 -march=native` and `extra_flags()`),
    in `cache_dir()` under a name keyed by the source, the compiler, the flags, `key_parts` and the CPU; built
    (aside, then renamed: concurrent builds) only when the cache does not hold it. Raises OSError or
    subprocess.CalledProcessError (with the compiler's message) when it cannot be built."""
    flags = COMPILE_FLAGS + _SHARED_FLAGS + (arch_flag(),) + extra_flags() + tuple(f"-I{d}" for d in include_dirs)
    key = hashlib.sha256()
    for part in (source.read_bytes(), cxx.encode(), " ".join(flags).encode(), *(str(p).encode() for p in key_parts),
                 platform.machine().encode(), cpu_signature().encode()):
        key.update(part)
    path = cache_dir() / f"{source.stem}-{key.hexdigest()[:16]}.so"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        out = Path(tmp) / path.name
        subprocess.run([cxx, *flags, str(source), "-o", str(out)], check=True, capture_output=True, text=True,
                       timeout=300)
        os.replace(out, path)
    return path


@functools.lru_cache(maxsize=None)
def _load() -> str | None:
    """Builds, loads and registers the kernel once per process: None, or why it is unavailable."""
    if os.environ.get("SEQJAX_NATIVE", "1") == "0":
        return "switched off (SEQJAX_NATIVE=0)"
    cxx = compiler()
    if not cxx:
        return "no C++ compiler found (set CXX, or install g++ or clang++)"
    try:
        library = ctypes.cdll.LoadLibrary(str(build_shared(cxx, SOURCE, [jax.ffi.include_dir()],
                                                                 [jaxlib.__version__])))
        if not _registered:  # once per process: XLA keeps a target's first registration
            for target, symbol in _SYMBOLS.items():
                jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
            _registered.append(library)
    except subprocess.CalledProcessError as e:
        return f"building {SOURCE.name} with {cxx} failed: {(e.stderr or '').strip()[-2000:]}"
    except (OSError, subprocess.SubprocessError, AttributeError, ValueError) as e:
        return f"building or loading {SOURCE.name} failed: {e}"
    return None


def vector_bytes() -> int:
    """The bytes of a vector register the kernels were built for: 64 (AVX-512), 32 (AVX2) or 16 (NEON, SSE).
    Raises RuntimeError (with the reason) where the kernels are not `available()`."""
    _require("SeqjaxVectorBytes")
    return int(_registered[0].SeqjaxVectorBytes())


def available() -> bool:
    """Whether the kernel is built and registered with XLA (building it on the first call, ~5 s)."""
    return _load() is None


def unavailable_reason() -> str | None:
    """Why `available()` is False (None when it is True)."""
    return _load()


@functools.lru_cache(maxsize=None)
def _packed_columns(hidden: int):
    """`(source, valid)`: the kernel's column `k` of `[.., 4H]` gate columns is column `source[k]` where
    `valid[k]` (else zero): groups of `UNITS` units, each group's columns `[i, f, g, o]` blocks of `UNITS`."""
    groups = -(-hidden // UNITS)
    k = np.arange(groups * 4 * UNITS)
    gate, unit = (k % (4 * UNITS)) // UNITS, (k // (4 * UNITS)) * UNITS + k % UNITS
    valid = unit < hidden
    return np.where(valid, gate * hidden + unit, 0), valid


def pack(w_x, w_h, b):
    """The kernel's weights: `[w_x; w_h]` as `[groups, F + H, 4 * UNITS]` and the bias as
    `[groups * 4 * UNITS]` (zero columns for the units past `H` of the last group)."""
    hidden = w_h.shape[0]
    source, valid = _packed_columns(hidden)
    w = jnp.where(valid, jnp.concatenate([w_x, w_h], axis=0)[:, source], 0)
    w = w.reshape(w.shape[0], -1, 4 * UNITS).transpose(1, 0, 2)
    return w, jnp.where(valid, b[source], 0)


@functools.lru_cache(maxsize=None)
def _unpacked_columns(hidden: int):
    """The inverse of `_packed_columns`: the packed column that holds each of the `4H` gate columns."""
    source, valid = _packed_columns(hidden)
    index = np.zeros(4 * hidden, np.int64)
    index[source[valid]] = np.nonzero(valid)[0]
    return index


def unpack(w, bias, features: int):
    """The inverse of `pack` (the padded columns dropped): `(w_x, w_h, b)`. The gradients of `pack`'s outputs
    unpack to those of its inputs: a gather, where `jax.vjp` of `pack` scatters (XLA:CPU's scatter took
    0.9 ms at F 8, H 128 and 4.7 ms at F 32, H 256 against 0.05 and 0.4 for this gather)."""
    hidden = w.shape[1] - features
    index = _unpacked_columns(hidden)
    columns = w.transpose(1, 0, 2).reshape(features + hidden, -1)[:, index]
    return columns[:features], columns[features:], bias[index]


def _require(target: str):
    """Raises RuntimeError (with the reason) where the kernels are not `available()`."""
    if not available():
        raise RuntimeError(f"seqjax.fast.native: the native kernel {target} is unavailable: {_load()}")


def _head_columns(w_d, b_d):
    """The head's weights with their columns padded with zeros to a multiple of 16 (the kernels' vectors)."""
    pad = -w_d.shape[1] % 16
    return jnp.pad(w_d, ((0, 0), (0, pad))), jnp.pad(b_d, (0, pad))


def _gru_blocks(w_x, w_h, b_x, b_h):
    """A GRU's weights (gate blocks `[z, r, n]`) as the kernels' four blocks `[n_x, z, r, n_h]` of an LSTM's
    shapes, `(w_x [F, 4H], w_h [H, 4H], b [4H])`: `x` feeds `n_x, z, r`, `h` feeds `z, r, n_h` (zeros in the
    other block), the biases of `z` and `r` summed."""
    hidden = w_h.shape[0]
    z, r, n = (slice(k * hidden, (k + 1) * hidden) for k in range(3))
    zeros_x, zeros_h = jnp.zeros((w_x.shape[0], hidden), w_x.dtype), jnp.zeros((hidden, hidden), w_h.dtype)
    return (jnp.concatenate([w_x[:, n], w_x[:, z], w_x[:, r], zeros_x], axis=1),
            jnp.concatenate([zeros_h, w_h[:, z], w_h[:, r], w_h[:, n]], axis=1),
            jnp.concatenate([b_x[n], b_x[z] + b_h[z], b_x[r] + b_h[r], b_h[n]]))


def _gru_gradients(g_x, g_h, g_b):
    """The gradients of `_gru_blocks`' outputs as those of its inputs: `(dw_x, dw_h, db_x, db_h)`."""
    hidden = g_h.shape[0]
    n_x, z, r, n_h = (slice(k * hidden, (k + 1) * hidden) for k in range(4))
    return (jnp.concatenate([g_x[:, z], g_x[:, r], g_x[:, n_x]], axis=1),
            jnp.concatenate([g_h[:, z], g_h[:, r], g_h[:, n_h]], axis=1),
            jnp.concatenate([g_b[z], g_b[r], g_b[n_x]]), jnp.concatenate([g_b[z], g_b[r], g_b[n_h]]))


class Kernels(NamedTuple):
    """One cell's kernels (XLA FFI targets) and how its weights `(w_x, w_h, b_x, b_h)` (`b_h` None for one
    bias) map to theirs: `blocks(w_x, w_h, b_x, b_h) -> (w_x, w_h, b)` in four gate blocks, `gradients(dw_x,
    dw_h, db) -> (dw_x, dw_h, db_x, db_h)` back. `train`: the training forward pass, which also keeps every
    step's `c` (None: `forward` keeps all the backward pass needs); `train_head` and `backward_head`: training
    with an affine head inside."""

    forward: str
    head: str
    train: str | None
    backward: str
    closed_loop: str
    blocks: Callable
    gradients: Callable
    train_head: str
    backward_head: str


LSTM = Kernels(TARGET, TARGET_HEAD, TARGET_TRAIN, TARGET_BACKWARD, TARGET_CLOSED_LOOP,
               lambda w_x, w_h, b_x, b_h: (w_x, w_h, b_x), lambda g_x, g_h, g_b: (g_x, g_h, g_b, None),
               TARGET_TRAIN_HEAD, TARGET_BACKWARD_HEAD)
GRU = Kernels(TARGET_GRU, TARGET_GRU_HEAD, None, TARGET_GRU_BACKWARD, TARGET_GRU_CLOSED_LOOP, _gru_blocks,
              _gru_gradients, TARGET_GRU_TRAIN_HEAD, TARGET_GRU_BACKWARD_HEAD)


def _strassen_attribute(target: str, strassen: bool) -> dict:
    """The `strassen` attribute of a call to `target`, where its kernel takes one (else none)."""
    return {"strassen": bool(strassen)} if target in _STRASSEN_TARGETS else {}


def _forward(target: str, w_x, w_h, b, carry: tuple, xs_TB, batch_major: bool, threads: int, head=None,
             keeps_cs: bool = False, keeps_gates: bool = False, keeps_hs: bool = False, strassen: bool = False):
    """The forward kernel `target`'s outputs: `ys` (the head's outputs with `head = (w_d, b_d)`); where it
    `keeps_hs` (training with a head) every step's `h`; where it `keeps_cs` (the LSTM's training kernels) every
    step's `c` and its activated gates (`keeps_gates`: laid out as `ys` with `4 * 16` columns a group of 16 units;
    else an empty array); the final carry (`h, c` or the GRU's `h`). `w_x, w_h, b`: in four gate blocks
    (`Kernels.blocks`). `strassen`: as `layer_forward`'s."""
    _require(target)
    time, batch, _ = xs_TB.shape
    hidden = w_h.shape[0]
    width = hidden if head is None else head[0].shape[1]
    w, bias = pack(w_x, w_h, b)
    state = jax.ShapeDtypeStruct((batch, hidden), jnp.float32)

    def sequence(columns: int):
        return jax.ShapeDtypeStruct((batch, time, columns) if batch_major else (time, batch, columns), jnp.float32)

    sequences, attrs = (sequence(width),), {}
    if keeps_hs:
        sequences += (sequence(hidden),)
    if keeps_cs:
        gates = sequence(w.shape[0] * 4 * UNITS) if keeps_gates else jax.ShapeDtypeStruct((0,), jnp.float32)
        sequences += (sequence(hidden), gates)
        attrs = {"keep_gates": keeps_gates}
    attrs.update(_strassen_attribute(target, strassen))
    call = jax.ffi.ffi_call(target, sequences + (state,) * len(carry), vmap_method="sequential")
    head_columns = () if head is None else _head_columns(*head)
    return call(xs_TB, w, bias, *carry, *head_columns, batch_major=batch_major, threads=np.int64(threads), **attrs)


def layer_forward(kernels: Kernels, weights, carry: tuple, xs_TB, *, batch_major: bool = True, threads: int = 0,
                  head=None, strassen: bool = False):
    """`(carry, ys)` of `kernels`' layer with `weights = (w_x, w_h, b_x, b_h)` over `xs_TB [T, B, F]` from
    `carry` (`[B, H]` arrays), float32: `ys [B, T, H]` when `batch_major`, else `[T, B, H]`; with `head = (w_d
    [H, O], b_d [O])`, those of the affine head `y_t = h_t w_d + b_d` inside the kernel instead (`[.., O]`).

    `strassen` (LSTM; H a multiple of 32 and a batch wide enough, else ignored): each step's `h w_h` by one level
    of Strassen's product (Winograd's form), 7 products of half the depth where the plain one takes 8: the same
    maths in another order of float32 roundings."""
    target = kernels.forward if head is None else kernels.head
    ys, *carry = _forward(target, *kernels.blocks(*weights), carry, xs_TB, batch_major, threads, head,
                          strassen=strassen)
    return tuple(carry), ys


def layer_train(kernels: Kernels, weights, carry: tuple, xs_TB, *, batch_major: bool = True, threads: int = 0,
                keep_gates: bool = False, head=None):
    """`(carry, ys, kept)`: `layer_forward` and what `layer_backward` needs besides (`(ys,)`, or the LSTM's `(ys,
    cs, gates)`: with `keep_gates` every step's gates, which the backward pass then reads instead of recomputing,
    at 4x the outputs' memory). With `head = (w_d, b_d)` the head's outputs are formed inside, as in
    `layer_forward`, `kept` starts with the layer's outputs, and `layer_backward_head` takes it."""
    if head is not None:  # results: the head's outputs, what the backward pass needs (hs first), the carry
        ys, *rest = _forward(kernels.train_head, *kernels.blocks(*weights), carry, xs_TB, batch_major, threads,
                             head, keeps_cs=kernels.train is not None, keeps_gates=keep_gates, keeps_hs=True)
        kept = len(rest) - len(carry)
        return tuple(rest[kept:]), ys, tuple(rest[:kept])
    if kernels.train is None:
        carry, ys = layer_forward(kernels, weights, carry, xs_TB, batch_major=batch_major, threads=threads)
        return carry, ys, (ys,)
    ys, cs, gates, *carry = _forward(kernels.train, *kernels.blocks(*weights), carry, xs_TB, batch_major, threads,
                                     keeps_cs=True, keeps_gates=keep_gates)
    return tuple(carry), ys, (ys, cs, gates)


def _transposed(w, features: int, hidden: int):
    """The packed weights `[G, F + H, 64]` as the backward kernel's `[G * 64, G * UNITS + F']`: row `k` is
    packed column `k`, columns the hidden units (zero past `H`), then the features (zero past `F`, to `F'` a
    multiple of 16)."""
    groups = w.shape[0]
    wt = w.transpose(0, 2, 1).reshape(groups * 4 * UNITS, features + hidden)
    return jnp.concatenate([wt[:, features:], jnp.zeros((wt.shape[0], groups * UNITS - hidden), wt.dtype),
                            wt[:, :features], jnp.zeros((wt.shape[0], -features % 16), wt.dtype)], axis=1)


def _backward(target: str, kernels: Kernels, weights, carry: tuple, xs_TB, kept: tuple, gradients: tuple,
              d_carry: tuple, extra: tuple, batch_major: bool, threads: int):
    """The backward kernel `target`'s outputs from the outputs' `gradients` (its arguments after `kept`):
    `((dw_x, dw_h, db_x, db_h), d_carry0, dxs_TB, extra results)`, `extra` the shapes of its results after `db`."""
    _require(target)
    time, batch, features = xs_TB.shape
    w_x, w_h, b = kernels.blocks(*weights)
    hidden = w_h.shape[0]
    w, bias = pack(w_x, w_h, b)
    state = jax.ShapeDtypeStruct((batch, hidden), jnp.float32)
    out = (jax.ShapeDtypeStruct(xs_TB.shape, jnp.float32), jax.ShapeDtypeStruct(w.shape, jnp.float32),
           jax.ShapeDtypeStruct(bias.shape, jnp.float32)) + tuple(extra) + (state,) * len(carry)
    call = jax.ffi.ffi_call(target, out, vmap_method="sequential")
    attrs = {"keep_gates": kept[2].size > 0} if len(kept) == 3 else {}  # the LSTM's `(ys, cs, gates)`
    dxs, dw, dbias, *rest = call(xs_TB, w, _transposed(w, features, hidden), bias, *carry, *kept, *gradients,
                                 *d_carry, batch_major=batch_major, threads=np.int64(threads), **attrs)
    return (kernels.gradients(*unpack(dw, dbias, features)), tuple(rest[len(extra):]), dxs,
            tuple(rest[:len(extra)]))


def layer_backward(kernels: Kernels, weights, carry: tuple, xs_TB, kept: tuple, dys, d_carry: tuple, *,
                   batch_major: bool = True, threads: int = 0):
    """The gradients of a `layer_train` call (with the same `batch_major`) from those of its outputs `dys` (laid
    out as `ys`) and of its final carry: `((dw_x, dw_h, db_x, db_h), d_carry0, dxs_TB)`, float32 (`db_h` None
    where `weights` has one bias). `carry`: the initial carry; `kept`: what `layer_train` returned."""
    grads, d_carry0, dxs, _ = _backward(kernels.backward, kernels, weights, carry, xs_TB, kept, (dys,), d_carry, (),
                                        batch_major, threads)
    return grads, d_carry0, dxs


def layer_backward_head(kernels: Kernels, weights, carry: tuple, xs_TB, kept: tuple, d_out, d_carry: tuple, head,
                        *, batch_major: bool = True, threads: int = 0):
    """The gradients of a `layer_train` call with `head = (w_d [H, O], b_d [O])` from those of the head's outputs
    `d_out` (laid out as its `ys`) and of the final carry: `((dw_x, dw_h, db_x, db_h), d_carry0, dxs_TB, (dw_d,
    db_d))`. The kernel forms each step's `h` gradient `d_out_t w_d^T` and adds `h_t^T d_out_t` into `dw_d` as it
    goes: no `[T, B, H]` gradient of the layer's outputs is written."""
    w_d = head[0]
    hidden, width = w_d.shape
    groups = -(-hidden // UNITS)
    w_d_t = jnp.pad(w_d.T, ((0, 0), (0, groups * UNITS - hidden)))
    d_out_padded = jnp.pad(d_out, ((0, 0), (0, 0), (0, -width % 16)))
    dw_d = jax.ShapeDtypeStruct((groups * UNITS, width + -width % 16), jnp.float32)
    grads, d_carry0, dxs, (dw_d,) = _backward(kernels.backward_head, kernels, weights, carry, xs_TB, kept,
                                              (d_out_padded, w_d_t), d_carry, (dw_d,), batch_major, threads)
    return grads, d_carry0, dxs, (dw_d[:hidden, :width], jnp.sum(d_out, axis=(0, 1)))


def layer_closed_loop(kernels: Kernels, weights, carry: tuple, x0, w_d, b_d, steps: int, *, threads: int = 0,
                      strassen: bool = False):
    """`(carry, ys [B, steps, F])`: `steps` closed-loop steps of `kernels`' layer and an affine head from `x0
    [B, F]` and `carry`, float32: `carry_t = cell(x_t, carry_(t-1))`, `y_t = h_t w_d + b_d` (`w_d [H, F]`, `b_d
    [F]`), `x_(t+1) = y_t`. The final carry has consumed `x_0 .. x_(steps-1)`.

    After the first step the fed-back input's projection is folded into the recurrent one (`x_(t+1) w_x =
    h_t (w_d w_x) + b_d w_x`): the same maths in another order of float32 roundings, one `[B, H] x [H, 4H]`
    matmul a step instead of `[B, F + H] x [F + H, 4H]` and the head's product off the recurrence (a GRU's
    candidate block `x w_n` becomes a fourth block of `h`'s).

    `strassen`: the folded steps by Strassen's product, as in `layer_forward`."""
    _require(kernels.closed_loop)
    batch, features = x0.shape
    w_x, w_h, b = kernels.blocks(*weights)
    hidden = w_h.shape[0]
    w, bias = pack(w_x, w_h, b)
    w_folded, bias_folded = pack(jnp.zeros((0, w_h.shape[1]), w_h.dtype), w_h + w_d @ w_x, b + b_d @ w_x)
    state = jax.ShapeDtypeStruct((batch, hidden), jnp.float32)
    ys = jax.ShapeDtypeStruct((batch, steps, features), jnp.float32)
    call = jax.ffi.ffi_call(kernels.closed_loop, (ys,) + (state,) * len(carry), vmap_method="sequential")
    ys, *carry = call(x0[None], w, bias, *carry, w_folded, bias_folded, *_head_columns(w_d, b_d),
                      threads=np.int64(threads), **_strassen_attribute(kernels.closed_loop, strassen))
    return tuple(carry), ys


def stack_closed_loop(layers, x0, w_d, b_d, steps: int, *, threads: int = 0):
    """`(carries, ys [B, steps, F])`: `steps` closed-loop steps of a stack of layers and an affine head from `x0
    [B, F]`, float32, in one kernel call. `layers`: `(kernels, weights, carry)` per layer, bottom first (`LSTM`
    or `GRU`, weights as `layer_forward`'s): layer 0 takes `x_t`, each layer above the `h_t` of the one below,
    `y_t = h_t^top w_d + b_d` (`w_d [H_top, F]`, `b_d [F]`) and `x_(t+1) = y_t`. `carries`: each layer's final
    carry, which has consumed `x_0 .. x_(steps-1)`.

    After the first step layer 0's projection of the fed-back input is folded into its input weights
    (`x_(t+1) w_x = h_t^top (w_d w_x) + b_d w_x`: the same maths in another order of float32 roundings), so
    layer 0 takes the top layer's `h_(t-1)` as its input and the head's product stays off the recurrence."""
    where = "seqjax.fast.native.stack_closed_loop"
    if len(layers) < 2:
        raise ValueError(f"{where}: layers must hold at least two (kernels, weights, carry), bottom first (one "
                         f"layer: layer_closed_loop); got {len(layers)}")
    batch, features = x0.shape
    width = features
    for i, (kernels, weights, carry) in enumerate(layers):
        if kernels not in (LSTM, GRU) or len(carry) != (1 if kernels is GRU else 2):
            raise ValueError(f"{where}: layer {i} must be (LSTM, weights, (h, c)) or (GRU, weights, (h,)); got "
                             f"{len(carry)} carry arrays for {'GRU' if kernels is GRU else 'LSTM'}")
        w_x, w_h = weights[0], weights[1]
        shapes = (w_x.shape, w_h.shape, *(c.shape for c in carry))
        if w_x.shape[0] != width or any(c.shape != (batch, w_h.shape[0]) for c in carry):
            raise ValueError(f"{where}: layer {i} takes inputs of width {width} (x0 [B={batch}, {features}] or the "
                             f"layer below's hidden size) with carry arrays [B, H] for its w_h [H, ..]; got w_x, "
                             f"w_h and carry of shapes {shapes}")
        width = w_h.shape[0]
    if w_d.shape != (width, features) or b_d.shape != (features,):
        raise ValueError(f"{where}: the head must map the top layer's {width} units to the {features} features it "
                         f"feeds back (w_d [{width}, {features}], b_d [{features}]); got {w_d.shape} and {b_d.shape}")
    _require(TARGET_STACK_CLOSED_LOOP)
    arguments, results, gru = [], [], []
    for kernels, weights, carry in layers:
        arguments += [*pack(*kernels.blocks(*weights)), *carry]
        results += [jax.ShapeDtypeStruct((batch, carry[0].shape[1]), jnp.float32)] * len(carry)
        gru.append(int(kernels is GRU))
    kernels, (w_x, w_h, b_x, b_h), _ = layers[0]
    folded = pack(*kernels.blocks(w_d @ w_x, w_h, b_x + b_d @ w_x, b_h))
    ys = jax.ShapeDtypeStruct((batch, steps, features), jnp.float32)
    call = jax.ffi.ffi_call(TARGET_STACK_CLOSED_LOOP, (ys, *results), vmap_method="sequential")
    ys, *flat = call(x0[None], *folded, *_head_columns(w_d, b_d), *arguments, gru=np.asarray(gru, np.int64),
                     threads=np.int64(threads))
    carries = []
    for _, _, carry in layers:
        carries.append(tuple(flat[:len(carry)]))
        flat = flat[len(carry):]
    return tuple(carries), ys


def lstm_forward(w_x, w_h, b, h, c, xs_TB, *, batch_major: bool = True, threads: int = 0, strassen: bool = False):
    """`((h, c), ys)` of an LSTM layer (`sj.lstm`'s maths and gate order `[i, f, g, o]`) over `xs_TB
    [T, B, F]` from the carry `h, c [B, H]`, float32. `ys` is `[B, T, H]` when `batch_major` (written in
    that layout by the kernel), else `[T, B, H]`. `threads`: cores at most (0: all). Builds and registers
    the kernel on first use; raises RuntimeError (with the reason) where it is not `available()`. `strassen`:
    as `layer_forward`'s."""
    return layer_forward(LSTM, (w_x, w_h, b, None), (h, c), xs_TB, batch_major=batch_major, threads=threads,
                         strassen=strassen)


def lstm_forward_head(w_x, w_h, b, h, c, xs_TB, w_d, b_d, *, batch_major: bool = True, threads: int = 0,
                      strassen: bool = False):
    """`((h, c), ys)`: `lstm_forward` followed by the affine head `y_t = h_t w_d + b_d` (`w_d [H, O]`, `b_d
    [O]`) inside the kernel, which writes only the head's outputs: `ys [B, T, O]` when `batch_major`, else
    `[T, B, O]`."""
    return layer_forward(LSTM, (w_x, w_h, b, None), (h, c), xs_TB, batch_major=batch_major, threads=threads,
                         head=(w_d, b_d), strassen=strassen)


def lstm_forward_train(w_x, w_h, b, h, c, xs_TB, *, batch_major: bool = True, threads: int = 0,
                       keep_gates: bool = False):
    """`((h, c), ys, kept)`: `lstm_forward`, plus what `lstm_backward` needs: `(ys, cs, gates)`, every step's
    cell state (laid out as `ys`) and, with `keep_gates`, its gates (`layer_train`)."""
    return layer_train(LSTM, (w_x, w_h, b, None), (h, c), xs_TB, batch_major=batch_major, threads=threads,
                       keep_gates=keep_gates)


def lstm_backward(w_x, w_h, b, h, c, xs_TB, kept, dys, dh, dc, *, batch_major: bool = True, threads: int = 0):
    """The gradients of an `lstm_forward_train` call from those of its outputs `dys` (laid out as `ys`) and of
    its final carry `dh, dc [B, H]`: `((dw_x, dw_h, db), (dh0, dc0), dxs_TB)`, float32. `h, c`: the initial
    carry; `kept`: what `lstm_forward_train` returned with the same `batch_major`."""
    grads, d_carry, dxs = layer_backward(LSTM, (w_x, w_h, b, None), (h, c), xs_TB, kept, dys, (dh, dc),
                                         batch_major=batch_major, threads=threads)
    return grads[:3], d_carry, dxs


def lstm_closed_loop(w_x, w_h, b, h, c, x0, w_d, b_d, steps: int, *, threads: int = 0, strassen: bool = False):
    """`((h, c), ys [B, steps, F])`: `layer_closed_loop` of an LSTM layer (`lstm_forward`'s maths)."""
    return layer_closed_loop(LSTM, (w_x, w_h, b, None), (h, c), x0, w_d, b_d, steps, threads=threads,
                             strassen=strassen)


def gru_forward(w_x, w_h, b_x, b_h, h, xs_TB, *, batch_major: bool = True, threads: int = 0):
    """`((h,), ys)` of a GRU layer (`sj.gru`'s maths with `reset_after`, gate order `[z, r, n]`: `n = tanh(x w_n
    + b_xn + r (h w_hn + b_hn))`, `h' = z h + (1 - z) n`) over `xs_TB [T, B, F]` from `h [B, H]`, float32;
    `ys` laid out as `lstm_forward`'s. Also the forward pass of training: `gru_backward` needs only `ys`."""
    return layer_forward(GRU, (w_x, w_h, b_x, b_h), (h,), xs_TB, batch_major=batch_major, threads=threads)


def gru_backward(w_x, w_h, b_x, b_h, h, xs_TB, ys, dys, dh, *, batch_major: bool = True, threads: int = 0):
    """The gradients of a `gru_forward` call from those of its outputs `dys` (laid out as `ys`) and of its final
    `dh [B, H]`: `((dw_x, dw_h, db_x, db_h), (dh0,), dxs_TB)`, float32. `h`: the initial carry; `ys`: what
    `gru_forward` returned with the same `batch_major`. Each step's gates are recomputed from `ys`."""
    return layer_backward(GRU, (w_x, w_h, b_x, b_h), (h,), xs_TB, (ys,), dys, (dh,), batch_major=batch_major,
                          threads=threads)
