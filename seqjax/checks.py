"""Trace-time argument checks shared by the public sequence functions.

Every error names the function, the argument, what was expected and what was received.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seqjax.cell import Cell, InputSpec


def check_cell(cell, where: str, argument: str = "cell") -> Cell:
    if not isinstance(cell, Cell):
        raise TypeError(f"{where}: {argument} must be a seqjax Cell (sj.lstm(...), sj.chain(...)); "
                        f"got {type(cell).__name__}")
    return cell


def as_array(x, where: str, argument: str):
    if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) or hasattr(x, "__jax_array__"):
        return x
    try:
        return jnp.asarray(x)
    except TypeError as e:
        raise TypeError(f"{where}: {argument} must be an array; got {type(x).__name__}") from e


def _step_shape(spec: InputSpec) -> str:
    return ", ".join("features" if d is None else str(d) for d in spec.shape)


def check_inputs(x, spec: InputSpec, where: str, argument: str, leading: tuple[str, ...]):
    """`x` must be `[*leading, *spec.shape]` with a dtype the cell takes; returns it as an array."""
    x = as_array(x, where, argument)
    rank = len(leading) + len(spec.shape)
    want = "[" + ", ".join(list(leading) + ([_step_shape(spec)] if spec.shape else [])) + "]"
    if x.ndim != rank:
        hint = ""
        if x.ndim == rank - 1:
            hint = " — add a batch axis"
        elif x.ndim == rank + 1 and "time" not in leading:
            hint = " — pass one step, not a sequence"
        raise ValueError(f"{where}: {argument} must be {want} for this cell; got {tuple(x.shape)}{hint}")
    tail = tuple(x.shape[len(leading):])
    if any(d is not None and d != t for d, t in zip(spec.shape, tail)):
        raise ValueError(f"{where}: {argument} must be {want} for this cell (its params take "
                         f"{_step_shape(spec)} features); got {tuple(x.shape)}")
    for name, size in zip(leading, x.shape):
        if size < 1:
            raise ValueError(f"{where}: {argument} must have at least one {name} step; got shape {tuple(x.shape)}")
    if spec.integer and not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{where}: {argument} must hold integer token ids for this cell; got dtype {x.dtype}")
    if not spec.integer and not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{where}: {argument} must be a floating array (float32, bfloat16, float64) for this "
                        f"cell; got dtype {x.dtype}")
    return x


def check_carry(cell: Cell, carry, batch_size: int, where: str, argument: str = "carry"):
    """`carry` must have the structure and `[batch_size, ...]` shapes of `cell.initial_carry(batch_size)`."""
    expected = jax.eval_shape(lambda: cell.initial_carry(batch_size))
    exp_def, got_def = jax.tree.structure(expected), jax.tree.structure(carry)
    if exp_def != got_def:
        raise ValueError(f"{where}: {argument} must have the structure of {cell.name}.initial_carry({batch_size}) "
                         f"{exp_def}; got {got_def} — a carry from another model?")
    for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(carry)):
        shape = tuple(jnp.shape(g))
        if shape != tuple(e.shape):
            raise ValueError(f"{where}: {argument} leaves must have shape {tuple(e.shape)} (batch {batch_size}); "
                             f"got {shape}")
        if not jnp.issubdtype(jnp.result_type(g), jnp.floating):
            raise TypeError(f"{where}: {argument} leaves must be floating; got {jnp.result_type(g)}")


def check_flags(flags, batch: int, time: int, where: str, argument: str):
    """A `[batch, time]` bool array, or None."""
    if flags is None:
        return None
    flags = as_array(flags, where, argument)
    if tuple(flags.shape) != (batch, time):
        raise ValueError(f"{where}: {argument} must be [batch, time] = ({batch}, {time}) bool; got shape "
                         f"{tuple(flags.shape)}")
    if flags.dtype != jnp.bool_:
        raise TypeError(f"{where}: {argument} must be bool (True = {'valid step' if argument == 'mask' else 'reset'});"
                        f" got dtype {flags.dtype}")
    return flags


def check_unroll(unroll, where: str):
    if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
        raise ValueError(f"{where}: unroll must be an int >= 1; got {unroll!r}")
    return unroll


def check_key(key, where: str, argument: str = "key"):
    if key is None:
        return None
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key) and jnp.ndim(key) == 0:
        return key
    if dtype == jnp.uint32 and tuple(jnp.shape(key)) == (2,):
        return key
    raise TypeError(f"{where}: {argument} must be a PRNG key from jax.random.key (or PRNGKey); got "
                    f"{type(key).__name__} with shape {tuple(jnp.shape(key))} and dtype {dtype}")


def check_choice(value, choices, where: str, argument: str):
    if value not in choices:
        raise ValueError(f"{where}: {argument} must be one of {list(choices)}; got {value!r}")
    return value
