"""Helpers every converter shares: framework arrays to NumPy, gate-block reordering, cell inspection.

Converters work on host NumPy arrays and hand back JAX arrays in the cell's parameter dtype. Nothing
here imports torch, keras or flax: tensors are converted by duck typing (`.detach().cpu().numpy()`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqjax.cell import _ACTIVATIONS, Cell
from seqjax.checks import check_cell

RECURRENT = ("lstm", "gru", "simple_rnn")
BLOCKS = {"lstm": 4, "gru": 3, "simple_rnn": 1}
GATES = {"lstm": "ifgo", "gru": "zrn", "simple_rnn": "h"}  # seqjax's gate-block order


def to_numpy(x, where: str, name: str) -> np.ndarray:
    """A torch tensor, Keras variable, JAX or NumPy array as a floating NumPy array (torch is not imported)."""
    if hasattr(x, "detach"):  # torch.Tensor (possibly requiring grad, possibly on GPU)
        x = x.detach()
        if hasattr(x, "cpu"):
            x = x.cpu()
        if str(getattr(x, "dtype", "")) == "torch.bfloat16":  # NumPy has no torch bfloat16 view
            x = x.float()
    if not isinstance(x, (np.ndarray, jax.Array)) and hasattr(x, "numpy"):  # torch, Keras, TF
        x = x.numpy()
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where}: {name} must be an array or tensor; got {type(x).__name__}") from e
    if not np.issubdtype(a.dtype, np.floating) and a.dtype.name != "bfloat16":
        raise TypeError(f"{where}: {name} must hold floating weights; got dtype {a.dtype}")
    return a


def check_shape(a: np.ndarray, expected: tuple, where: str, name: str, hint: str = "") -> np.ndarray:
    """`a` with exactly `expected` shape (None entries are free), else a ValueError naming `name`."""
    if a.ndim != len(expected) or any(e is not None and e != s for e, s in zip(expected, a.shape)):
        want = "(" + ", ".join("?" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{where}: {name} must have shape {want}{hint}; got {tuple(a.shape)}")
    return a


def reorder_blocks(a: np.ndarray, src: str, dst: str, axis: int = -1) -> np.ndarray:
    """Reorders the equal gate blocks of `a` along `axis` from order `src` to `dst` (e.g. "rzn" -> "zrn")."""
    blocks = dict(zip(src, np.split(a, len(src), axis=axis)))
    return np.concatenate([blocks[g] for g in dst], axis=axis)


def split_blocks(a, gates: str, axis: int = -1) -> dict[str, np.ndarray]:
    """`{gate: block}` for the equal gate blocks of `a` along `axis`."""
    return dict(zip(gates, np.split(np.asarray(a), len(gates), axis=axis)))


def describe(cell: Cell) -> str:
    """`sj.gru(8, reset_after=False)`-style description of a cell for error messages."""
    cfg = cell.config
    if cell.name in RECURRENT and "hidden_size" in cfg:
        extra = "" if cfg.get("reset_after", True) else ", reset_after=False"
        return f"sj.{cell.name}({cfg['hidden_size']}{extra})"
    return f"sj.{cell.name}(...)"


def hidden_size(cell: Cell, where: str) -> int:
    if "hidden_size" not in cell.config:
        raise ValueError(f"{where}: cannot read the hidden size of this {cell.name!r} cell: its config is empty "
                         f"(build it with sj.{cell.name}(...))")
    return int(cell.config["hidden_size"])


def activation_name(value) -> str | None:
    """The Keras name of an activation given as a name or as one of seqjax's named callables; None if custom."""
    if isinstance(value, str):
        return value
    for name, fn in _ACTIVATIONS.items():
        if fn is value:
            return name
    return None


def parts(cell: Cell) -> tuple[Cell, ...]:
    return tuple(cell.config.get("parts", ()))


def check_converter_cell(cell, where: str) -> Cell:
    """The cell, checked to be a seqjax Cell whose config says what it is (chain parts, bidirectional sides)."""
    check_cell(cell, where)
    if cell.name == "chain" and "parts" not in cell.config:
        raise ValueError(f"{where}: this chain has no config; build it with sj.chain(...)")
    if cell.name == "bidirectional" and "forward" not in cell.config:
        raise ValueError(f"{where}: this bidirectional cell has no config; build it with sj.bidirectional(...)")
    return cell


def leaf_dtypes(cell: Cell, in_features) -> Any:
    """The dtypes (and shapes) of `cell.init(key, in_features)`, without computing it."""
    return jax.eval_shape(lambda key: cell.init(key, in_features), jax.random.key(0))


def as_params(tree: dict, cell: Cell, in_features, where: str) -> dict:
    """NumPy leaves of one leaf cell's params -> JAX arrays in the dtypes `cell.init` makes, shape-checked."""
    expected = leaf_dtypes(cell, in_features)
    if set(expected) != set(tree):
        raise ValueError(f"{where}: {describe(cell)} params have keys {sorted(expected)}; the converted weights "
                         f"have {sorted(tree)} — a different kind of layer?")
    out = {}
    for k, spec in expected.items():
        check_shape(np.asarray(tree[k]), tuple(spec.shape), where, f"the converted {describe(cell)} param {k!r}")
        out[k] = jnp.asarray(tree[k], dtype=spec.dtype)
    return out


def params_to_numpy(params: dict) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in params.items()}  # writable copies (torch.from_numpy warns otherwise)


def check_bidirectional_sides(cell: Cell, where: str, wrapper: str):
    """A bidirectional cell's two sides must be recurrent cells for `wrapper` (another framework's layer)."""
    for side in ("forward", "backward"):
        if cell.config[side].name not in RECURRENT:
            raise ValueError(f"{where}: {wrapper}; the {side} cell is sj.{cell.config[side].name}")


def _fits(cell: Cell, params, where: str, what: str):
    """Runs `cell.input_spec(params)` (which checks every shape, and a chain's links) with `where` prefixed."""
    try:
        cell.input_spec(params)
    except (ValueError, TypeError) as e:
        raise type(e)(f"{where}: {what} do not fit the cell: {e}") from e
    return params


def check_fits(cell: Cell, params, where: str):
    """The converted weights checked against the cell after converting them in."""
    return _fits(cell, params, where, "the converted weights")


def check_params(cell: Cell, params, where: str):
    """The params checked against the cell before converting them out."""
    return _fits(cell, params, where, "params")


def make_carry(kind: str, h, c=None):
    """The seqjax carry of a recurrent cell of `kind` from its hidden (and, for LSTM, cell) state arrays."""
    from seqjax.cells.gru import GRUCarry
    from seqjax.cells.lstm import LSTMCarry
    from seqjax.cells.simple_rnn import SimpleRNNCarry

    h = jnp.asarray(h)
    if kind == "lstm":
        return LSTMCarry(h=h, c=jnp.asarray(c))
    return GRUCarry(h=h) if kind == "gru" else SimpleRNNCarry(h=h)


def carry_arrays(kind: str, carry, where: str, name: str = "carry") -> tuple:
    """`(h, c)` of an LSTM carry, `(h,)` of a GRU / SimpleRNN carry, as NumPy arrays."""
    fields = ("h", "c") if kind == "lstm" else ("h",)
    if not all(hasattr(carry, f) for f in fields):
        raise TypeError(f"{where}: {name} must be the carry of sj.{kind} (a NamedTuple with fields "
                        f"{', '.join(fields)}); got {type(carry).__name__}")
    return tuple(np.asarray(getattr(carry, f)) for f in fields)
