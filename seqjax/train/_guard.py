"""Refusing a silent recompile: a compiled step accepts only the shapes of its first call.

`jax.jit` compiles a new program for every new shape, silently. A training step that meets a batch of
another shape (the last, short batch; a different chunk length; another model's params) would recompile
and keep going. `ShapeGuard` records the structure, shapes and dtypes of the first call's arguments and
raises a `ValueError` naming the argument, the compiled shape and the new one on any later difference.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _dtype(x):
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = np.result_type(x)
    try:
        return jax.dtypes.canonicalize_dtype(dtype)
    except (TypeError, ValueError):  # PRNG key dtypes
        return dtype


def _describe(path) -> str:
    return jax.tree_util.keystr(path, simple=True, separator=".")


@functools.cache
def _jax_leaf_types() -> tuple[type, ...]:
    """The concrete types of a jax array and a typed key array, whose `.shape` and `.dtype` are what `jax.jit`
    keys its cache on (a jax array's dtype is canonical). Made on first use: importing seqjax starts no
    backend."""
    return type(jnp.zeros(())), type(jax.random.key(0))


def _leaf_signature(x, fast: tuple[type, ...]):
    # Read directly, a jax array's shape and dtype take a third of the time of `np.shape` and `_dtype` (a
    # small LSTM's train state: 7 against 21 µs a call, on a step of ~1 ms).
    if type(x) in fast:
        return x.shape, x.dtype
    return np.shape(x), _dtype(x)


def signature(tree):
    """`(treedef, ((shape, dtype), ...))` of `tree`: cheap enough to compute on every call."""
    leaves, treedef = jax.tree.flatten(tree)
    fast = _jax_leaf_types()
    return treedef, tuple([_leaf_signature(x, fast) for x in leaves])


class ShapeGuard:
    """Checks that every call's arguments match the first call's, argument by argument."""

    def __init__(self, where: str, names: tuple[str, ...], hints: dict[str, str] | None = None):
        self.where = where
        self.names = names
        self.hints = hints or {}
        self.compiled = None

    def check(self, *args) -> None:
        sigs = tuple(signature(a) for a in args)
        if self.compiled is None:
            self.compiled = sigs
            return
        if sigs == self.compiled:
            return
        for name, arg, (want_def, want), (got_def, got) in zip(self.names, args, self.compiled, sigs):
            if (want_def, want) == (got_def, got):
                continue
            hint = self.hints.get(name, "")
            if want_def != got_def:
                raise ValueError(f"{self.where}: {name} must have the structure the step was compiled for, "
                                 f"{want_def}; got {got_def}{hint}")
            paths = [_describe(p) for p, _ in jax.tree_util.tree_flatten_with_path(arg)[0]]
            for path, (w_shape, w_dtype), (g_shape, g_dtype) in zip(paths, want, got):
                if (w_shape, w_dtype) != (g_shape, g_dtype):
                    label = f"{name}.{path}" if path else name
                    raise ValueError(f"{self.where}: {label} must have shape {w_shape} and dtype {w_dtype} as "
                                     f"compiled on the first call; got {g_shape} {g_dtype}{hint}")


def shape_guard(allow_recompile: bool, where: str, names: tuple[str, ...],
                hints: dict[str, str] | None = None) -> ShapeGuard | None:
    """A `ShapeGuard` for a step's arguments, or None when the step may recompile for new shapes."""
    return None if allow_recompile else ShapeGuard(where, names, hints)
