"""The cell: a NamedTuple of pure functions, in the style of optax's GradientTransformation.

A cell is everything `scan`, `rollout` and `chain` need to run one recurrent (or stateless) layer:

- ``init(key, in_features) -> params``
- ``initial_carry(batch_size, dtype=jnp.float32) -> carry`` (zeros, no key)
- ``step(params, carry, x_t, noise=None) -> (carry, y_t)`` over one step ``x_t [B, F]``; ``noise`` is the
  dropout mask pytree made by ``sample_noise`` (``None``: no dropout)
- ``input_spec(params) -> InputSpec``: what one step's input must look like for these params (it also
  checks the params' own shapes and raises a clear error when they are inconsistent)
- ``sample_noise(key, params, batch_size, dtype) -> noise``: the variational dropout masks of one call,
  or ``None`` for cells without dropout
- ``sequence``: optional sequence-level function (the fast path) used by ``scan`` instead of a loop over
  ``step``; same numbers as the loop. Signature
  ``sequence(params, carry, xs_TB, *, mask_TB, reset_TB, noise, unroll, masked_output) -> (carry, ys_TB)``
  on time-major arrays.

Hyperparameters live in the closure of the function that builds the cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

Params = Any
Carry = Any
Noise = Any


class InputSpec(NamedTuple):
    """What one step's input must be: trailing shape after the batch axis and whether it is integer."""

    shape: tuple[int, ...]
    integer: bool = False

    def describe(self) -> str:
        return ", ".join(str(d) for d in self.shape) if self.shape else ""


class CellConfig(Mapping):
    """Read-only, hashable hyperparameters of a cell (`cell.config["hidden_size"]`), for weight converters.

    Informational: the cell's functions use their closure, never this mapping. Values must be hashable.
    """

    __slots__ = ("_items",)

    def __init__(self, **items):
        self._items = dict(items)

    def __getitem__(self, key):
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)

    def __hash__(self):
        return hash(frozenset(self._items.items()))

    def __repr__(self):
        return f"CellConfig({', '.join(f'{k}={v!r}' for k, v in self._items.items())})"


class Cell(NamedTuple):
    """A layer as pure functions; see the module docstring for each field's signature."""

    init: Callable[..., Params]
    initial_carry: Callable[..., Carry]
    step: Callable[..., tuple[Carry, jax.Array]]
    input_spec: Callable[[Params], InputSpec]
    sample_noise: Callable[..., Noise]
    sequence: Optional[Callable[..., tuple[Carry, jax.Array]]] = None
    name: str = "cell"
    config: Mapping[str, Any] = CellConfig()


def compiled_init(init: Callable[..., Params]) -> Callable[..., Params]:
    """`init(key, in_features)` as one compiled program (`in_features` static).

    Run op by op, an initialiser with an orthogonal matrix dispatches dozens of small XLA programs; one
    jitted program gives the same params, bit for bit, much sooner.
    """
    return jax.jit(init, static_argnames="in_features")


def no_noise(key, params, batch_size, dtype=jnp.float32):
    """`sample_noise` of cells without dropout."""
    del key, params, batch_size, dtype
    return None


_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "hard_sigmoid": jax.nn.hard_sigmoid,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "softmax": jax.nn.softmax,
    "log_softmax": jax.nn.log_softmax,
    "softplus": jax.nn.softplus,
    "linear": lambda x: x,
}


def resolve_activation(fn, where: str, argument: str) -> Callable[[jax.Array], jax.Array]:
    """A callable from a callable or one of the names Keras uses ("tanh", "sigmoid", ...)."""
    if callable(fn):
        return fn
    if isinstance(fn, str) and fn in _ACTIVATIONS:
        return _ACTIVATIONS[fn]
    raise ValueError(
        f"{where}: {argument} must be a callable or one of {sorted(_ACTIVATIONS)}; got {fn!r}"
    )


def matmul(a, w, dtype=None):
    """`a @ w`; with `dtype` (a cell's `matmul_dtype`: mixed precision) both operands rounded to `dtype`
    and the products summed in `a`'s dtype. Without `dtype`, or when both already are in it, a plain matmul."""
    if dtype is None or a.dtype == w.dtype == dtype:
        return a @ w
    return jnp.matmul(a.astype(dtype), w.astype(dtype), preferred_element_type=a.dtype)


def check_size(value, where: str, argument: str) -> int:
    """An int >= 1, or a ValueError/TypeError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: {argument} must be an int >= 1; got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{where}: {argument} must be an int >= 1; got {value}")
    return value


def check_rate(value, where: str, argument: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"{where}: {argument} must be a float in [0, 1); got {value!r}")
    return float(value)


def check_float_dtype(dtype, where: str, argument: str):
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{where}: {argument} must be a floating dtype (float32, bfloat16, float64); got {dtype}")
    return dtype


def check_param_shape(params, name: str, expected: tuple, where: str) -> jax.Array:
    """params[name] with exactly `expected` shape (None entries are free); a clear error otherwise."""
    if not isinstance(params, dict) or name not in params:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{where}: params must be a dict with key {name!r}; got {got}")
    shape = tuple(jnp.shape(params[name]))
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
        want = "[" + ", ".join("?" if e is None else str(e) for e in expected) + "]"
        raise ValueError(f"{where}: params[{name!r}] must have shape {want}; got {shape}")
    return params[name]


def draw(initializer, key, shape, dtype) -> jax.Array:
    """`initializer(key, shape)` in float32 (float64 for float64) cast to `dtype`.

    Low-precision dtypes such as bfloat16 have no QR on CPU (orthogonal init), so they are drawn in
    float32 and rounded.
    """
    dtype = jnp.dtype(dtype)
    compute = dtype if dtype.itemsize >= 4 else jnp.float32
    return initializer(key, shape, compute).astype(dtype)


def dropout_mask(key, rate: float, shape, dtype) -> jax.Array:
    """Inverted-dropout mask: 0 with probability `rate`, else 1 / (1 - rate)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return keep.astype(dtype) / jnp.asarray(1.0 - rate, dtype)
