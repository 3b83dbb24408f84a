"""The LSTM step's gate activations alone: the native kernels' code against variants of it, timed and checked.

After its products, an LSTM step spends most of its time in five activations per row and unit (three sigmoids,
two tanh) and the cell update: ~13% of the many closed loop (BENCHMARKS.md, "What would move the remaining goals").
`activations.cc` includes the kernels' source (without XLA's handlers) and times a register block of rows of one
unit group (the kernels' widest, 6 rows) through the gates and the cell update, in their code (XLA:CPU's rational
tanh, the sigmoid as tanh(x / 2) / 2 + 1 / 2) and in variants: the sigmoid's halvings folded into the rational (the
same bits, one multiply fewer), the division by a reciprocal estimate, no division at all (wrong values: what the
division costs), and tables of polynomial pieces looked up by a permute (no division; AVX-512 builds). Each
variant's tanh and sigmoid are also evaluated over float32 inputs and compared with float64 NumPy.

`python -m benchmarks.activations` prints ns per row and group (median of interleaved rounds), the ratio to the
kernels' code and each variant's largest error; `--out` writes them as JSON.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import hashlib
import json
import subprocess
from pathlib import Path

import jax
import jaxlib
import numpy as np

from seqjax.fast import native

SOURCE = Path(__file__).with_suffix(".cc")  # the timed blocks, C++ (the kernels' source included)
_PIECES = ((16, 6), (32, 5))  # the tables: (pieces over [0, 8), degree)


def fit_pieces(pieces: int, degree: int) -> np.ndarray:
    """Coefficients `[degree + 1, pieces]` (from the constant up) of tanh on `pieces` equal pieces of [0, 8), each a
    polynomial in t in [0, 1) across its piece: least squares on Chebyshev points, reweighted toward the largest
    errors (Lawson) so the fit approaches the minimax one. The first piece has no constant and is fitted for
    relative error, so that tanh(x) ~ x keeps its precision near 0."""
    t = 0.5 - 0.5 * np.cos(np.pi * (np.arange(2000) + 0.5) / 2000)  # Chebyshev points of (0, 1)
    width = 8.0 / pieces
    table = np.zeros((degree + 1, pieces))
    for i in range(pieces):
        y = np.tanh(width * (i + t))
        first = 1 if i == 0 else 0
        basis = np.stack([t ** k for k in range(first, degree + 1)], axis=1)
        scale = 1.0 / y if i == 0 else np.ones_like(t)
        weight = np.ones_like(t)
        for _ in range(50):
            coef, *_ = np.linalg.lstsq(basis * (scale * weight)[:, None], y * scale * weight, rcond=None)
            error = np.abs(basis @ coef - y) * scale
            weight = weight * (error / error.max() + 1e-3)
            weight /= weight.mean()
        table[first:, i] = coef
    return table.astype(np.float32)


@functools.lru_cache(maxsize=None)
def _library() -> ctypes.CDLL | None:
    """The built blocks (cached beside the native kernels, keyed by their source too), or None where no compiler
    is found or they cannot be built."""
    cxx = native.compiler()
    if not cxx:
        return None
    kernels = hashlib.sha256(native.SOURCE.read_bytes()).hexdigest()
    try:
        path = native.build_shared(cxx, SOURCE, [jax.ffi.include_dir(), native.SOURCE.parent],
                                   [kernels, jaxlib.__version__])
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError):
        return None
    lib.seqjax_act_name.restype = ctypes.c_char_p
    lib.seqjax_act_name.argtypes = (ctypes.c_int,)
    lib.seqjax_act_available.argtypes = (ctypes.c_int,)
    lib.seqjax_act_seconds.restype = ctypes.c_double
    lib.seqjax_act_seconds.argtypes = (ctypes.c_int, ctypes.c_long)
    floats = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
    lib.seqjax_act_tables.argtypes = (floats, floats)
    lib.seqjax_act_eval.argtypes = (ctypes.c_int, ctypes.c_int, floats, floats, ctypes.c_long)
    lib.seqjax_act_tables(*(np.ascontiguousarray(fit_pieces(n, d)) for n, d in _PIECES))
    return lib


@functools.lru_cache(maxsize=None)
def _inputs() -> np.ndarray:
    """float32 inputs for the error checks (read-only, made once): [-12, 12] densely, tiny magnitudes of both signs;
    length a multiple of 16."""
    tiny = np.geomspace(1e-30, 1e-2, 4096)
    x = np.concatenate([np.linspace(-12.0, 12.0, 1 << 20), tiny, -tiny]).astype(np.float32)
    x = np.pad(x, (0, -len(x) % 16))
    x.setflags(write=False)
    return x


def evaluate(variant: int, x: np.ndarray, sigmoid: bool) -> np.ndarray:
    """The variant's sigmoid (or tanh) of the float32 array `x` (length a multiple of 16)."""
    lib = _library()
    if lib is None or not lib.seqjax_act_available(variant):
        raise ValueError(f"evaluate: variant {variant} is not available in this build")
    x = np.ascontiguousarray(x, np.float32)
    if x.ndim != 1 or len(x) % 16:
        raise ValueError(f"evaluate: x must be 1-D with a length that is a multiple of 16, got shape {x.shape}")
    y = np.empty_like(x)
    lib.seqjax_act_eval(variant, int(sigmoid), x, y, len(x))
    return y


def errors(variant: int) -> dict:
    """Largest absolute errors of the variant's tanh and sigmoid against float64 NumPy, and whether a NaN input
    gives NaN."""
    x = _inputs()
    x64 = x.astype(np.float64)
    nan = np.full(16, np.nan, np.float32)
    return {"tanh_max_abs": float(np.abs(evaluate(variant, x, False) - np.tanh(x64)).max()),
            "sigmoid_max_abs": float(np.abs(evaluate(variant, x, True) - 1.0 / (1.0 + np.exp(-x64))).max()),
            "nan_stays": bool(np.isnan(evaluate(variant, nan, False)).all()
                              and np.isnan(evaluate(variant, nan, True)).all())}


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of every variant")
    parser.add_argument("--blocks", type=int, default=1_000_000, help="register blocks timed per variant and round")
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.blocks < 1:
        raise ValueError(f"activations: --rounds and --blocks must be positive, got {args.rounds} and {args.blocks}")
    lib = _library()
    if lib is None:
        print("the activation blocks could not be built: no C++ compiler found (set CXX), or it failed")
        return None
    rows = lib.seqjax_act_rows()
    variants = [v for v in range(lib.seqjax_act_variants()) if lib.seqjax_act_available(v)]
    times = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants[r % len(variants):] + variants[:r % len(variants)]:  # the order rotates each round
            times[v].append(lib.seqjax_act_seconds(v, args.blocks) / (args.blocks * rows) * 1e9)
    base = float(np.median(times[0]))
    results = []
    for v in variants:
        ns = float(np.median(times[v]))
        results.append({"variant": v, "name": lib.seqjax_act_name(v).decode(), "ns_per_row_and_group": ns,
                        "time_ratio": ns / base, **errors(v)})
    print(f"gate activations and cell update, one row of 16 units ({rows}-row blocks, median of {args.rounds} rounds)")
    print("| variant | ns | time vs the kernels' | tanh max abs error | sigmoid max abs error | NaN stays |")
    print("|---|---|---|---|---|---|")
    for row in results:
        print(f"| {row['name']} | {row['ns_per_row_and_group']:.2f} | {row['time_ratio']:.3f} | "
              f"{row['tanh_max_abs']:.2e} | {row['sigmoid_max_abs']:.2e} | {row['nan_stays']} |")
    payload = {"rows_per_block": rows, "rounds": args.rounds, "blocks": args.blocks,
               "vector_bytes": lib.seqjax_act_vector_bytes(), "results": results}
    if args.out:
        Path(args.out).write_text(json.dumps(payload, indent=2))
        print(f"JSON: {args.out}")
    return payload


if __name__ == "__main__":
    main()
