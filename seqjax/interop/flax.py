"""Flax linen param trees <-> seqjax params, for `LSTMCell` / `OptimizedLSTMCell`, `GRUCell`, `SimpleCell`.

- `LSTMCell` and `OptimizedLSTMCell` share one tree: `ii, if, ig, io` `{kernel [F, H]}` (no bias) and
  `hi, hf, hg, ho` `{kernel [H, H], bias [H]}`; gates i, f, g, o as in seqjax, so `w_x`, `w_h`, `b` are the
  four blocks concatenated.
- `GRUCell` (gates r, z, n; the `reset_after=True` maths): `ir, iz, in` `{kernel, bias}`, `hr, hz`
  `{kernel}`, `hn` `{kernel, bias}`. `from_flax` gives `b_x = [iz, ir, in]` biases and `b_h = [0, 0, hn]`;
  `to_flax` folds `b_h`'s z and r blocks into `iz` / `ir` (the sum is what the maths uses).
  `sj.gru(reset_after=False)` has no Flax form (error).
- `SimpleCell`: `i {kernel, bias}`, `h {kernel}` (its `residual` option is not part of the params; keep it
  False). `Dense` `{kernel[, bias]}`, `Embed` `{embedding}`, activations `{}`.
- A chain: a tuple / list of per-part trees. A bidirectional cell: `nn.Bidirectional`'s tree
  `{"forward_rnn": {"cell": ...}, "backward_rnn": {"cell": ...}}`.

`from_flax` accepts `{"params": tree}` (what `module.init` returns) or the tree, and an `nn.RNN`'s
`{"cell": tree}` wherever a cell's tree goes. The carry of a Flax LSTM cell is `(c, h)`; seqjax's is
`LSTMCarry(h, c)`: use `carry_to_flax` / `carry_from_flax`. Activations (`gate_fn`, `activation_fn`) are
module attributes, not params: both sides default to sigmoid / tanh.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from seqjax.bidirectional import BidirectionalCarry, BidirectionalParams
from seqjax.cell import Cell
from seqjax.interop import _layout as lay

_FLAX_NAME = {"lstm": "LSTMCell", "gru": "GRUCell", "simple_rnn": "SimpleCell", "dense": "Dense", "embed": "Embed",
              "activation": "(no module)"}


def _supported(cell: Cell, where: str) -> Cell:
    lay.check_converter_cell(cell, where)
    if cell.name not in _FLAX_NAME and cell.name not in ("chain", "bidirectional"):
        raise ValueError(f"{where}: no Flax module corresponds to a cell named {cell.name!r}")
    if cell.name == "gru" and not cell.config["reset_after"]:
        raise ValueError(f"{where}: Flax's GRUCell is the reset_after=True form (r * (h U_n + b_hn)); "
                         f"{lay.describe(cell)} cannot be represented")
    if cell.name == "bidirectional":
        lay.check_bidirectional_sides(cell, where, "nn.Bidirectional wraps nn.RNN layers")
    return cell


def _leaf_keys(cell: Cell) -> dict[str, tuple[str, ...]]:
    """Flax submodule name -> the param names it holds, for a recurrent cell."""
    if cell.name == "lstm":
        return {**{f"i{g}": ("kernel",) for g in "ifgo"}, **{f"h{g}": ("bias", "kernel") for g in "ifgo"}}
    if cell.name == "gru":
        return {"ir": ("bias", "kernel"), "iz": ("bias", "kernel"), "in": ("bias", "kernel"),
                "hr": ("kernel",), "hz": ("kernel",), "hn": ("bias", "kernel")}
    return {"i": ("bias", "kernel"), "h": ("kernel",)}


def _check_tree(cell: Cell, tree, where: str, label: str):
    """The tree has exactly the submodules and params of the Flax cell for `cell`; NumPy leaves."""
    want = _leaf_keys(cell)
    if not isinstance(tree, Mapping) or set(tree) != set(want) or any(
            not isinstance(tree[m], Mapping) or tuple(sorted(tree[m])) != want[m] for m in want):
        got = ({m: sorted(tree[m]) if isinstance(tree[m], Mapping) else type(tree[m]).__name__ for m in sorted(tree)}
               if isinstance(tree, Mapping) else type(tree).__name__)
        raise ValueError(f"{where}: {label} must be a Flax {_FLAX_NAME[cell.name]} param tree "
                         f"{ {m: list(v) for m, v in want.items()} } for {lay.describe(cell)}; got {got}")
    return {m: {k: lay.to_numpy(v, where, f"{label}[{m!r}][{k!r}]") for k, v in tree[m].items()} for m in want}


def _unwrap_rnn(tree):
    """An `nn.RNN`'s `{"cell": tree}` -> the cell's tree."""
    return tree["cell"] if isinstance(tree, Mapping) and set(tree) == {"cell"} else tree


def _recurrent_from(cell: Cell, tree, where: str, label: str) -> dict:
    hidden = lay.hidden_size(cell, where)
    t = _check_tree(cell, _unwrap_rnn(tree), where, label)
    hint = f" for {lay.describe(cell)}"
    first = "ii" if cell.name == "lstm" else ("ir" if cell.name == "gru" else "i")
    in_features = t[first]["kernel"].shape[0] if t[first]["kernel"].ndim == 2 else None
    for m, leaves in t.items():
        rows = in_features if m.startswith("i") else hidden
        lay.check_shape(leaves["kernel"], (rows, hidden), where, f"{label}[{m!r}]['kernel']", hint)
        if "bias" in leaves:
            lay.check_shape(leaves["bias"], (hidden,), where, f"{label}[{m!r}]['bias']", hint)
    cat = np.concatenate
    if cell.name == "lstm":
        tree = {"w_x": cat([t[f"i{g}"]["kernel"] for g in "ifgo"], -1),
                "w_h": cat([t[f"h{g}"]["kernel"] for g in "ifgo"], -1),
                "b": cat([t[f"h{g}"]["bias"] for g in "ifgo"], -1)}
    elif cell.name == "gru":
        zeros = np.zeros(hidden, t["hn"]["bias"].dtype)
        tree = {"w_x": cat([t[f"i{g}"]["kernel"] for g in "zrn"], -1),
                "w_h": cat([t[f"h{g}"]["kernel"] for g in "zrn"], -1),
                "b_x": cat([t[f"i{g}"]["bias"] for g in "zrn"], -1),
                "b_h": cat([zeros, zeros, t["hn"]["bias"]], -1)}
    else:
        tree = {"w_x": t["i"]["kernel"], "w_h": t["h"]["kernel"], "b": t["i"]["bias"]}
    return lay.as_params(tree, cell, in_features, where)


def _stateless_from(cell: Cell, tree, where: str, label: str):
    if cell.name == "activation":
        if tree is not None and not (isinstance(tree, Mapping) and len(tree) == 0):
            raise ValueError(f"{where}: {label} must be empty for sj.activation; got {tree!r}")
        return {}
    names = {"dense": {"kernel": "w", "bias": "b"}, "embed": {"embedding": "table"}}[cell.name]
    if not isinstance(tree, Mapping) or not set(tree) <= set(names) or not tree:
        got = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
        raise ValueError(f"{where}: {label} must be a Flax {_FLAX_NAME[cell.name]} param tree with keys "
                         f"{sorted(names)}; got {got}")
    leaves = {names[k]: lay.to_numpy(v, where, f"{label}[{k!r}]") for k, v in tree.items()}
    in_features = int(leaves["w"].shape[0]) if cell.name == "dense" else None
    return lay.as_params(leaves, cell, in_features, where)


def _from(cell: Cell, tree, where: str, label: str):
    _supported(cell, where)
    if cell.name == "chain":
        parts = lay.parts(cell)
        if not isinstance(tree, (list, tuple)) or len(tree) != len(parts):
            raise TypeError(f"{where}: for a chain of {len(parts)} parts, {label} must be a list or tuple of "
                            f"{len(parts)} per-part trees; got {type(tree).__name__}")
        return tuple(_from(c, t, where, f"{label}[{i}]") for i, (c, t) in enumerate(zip(parts, tree)))
    if cell.name == "bidirectional":
        if not isinstance(tree, Mapping) or set(tree) != {"forward_rnn", "backward_rnn"}:
            got = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
            raise ValueError(f"{where}: for a bidirectional cell, {label} must be nn.Bidirectional's tree with keys "
                             f"['backward_rnn', 'forward_rnn']; got {got}")
        return BidirectionalParams(
            _from(cell.config["forward"], tree["forward_rnn"], where, f"{label}['forward_rnn']"),
            _from(cell.config["backward"], tree["backward_rnn"], where, f"{label}['backward_rnn']"))
    if cell.name in lay.RECURRENT:
        return _recurrent_from(cell, tree, where, label)
    return _stateless_from(cell, tree, where, label)


def from_flax(variables, cell: Cell):
    """seqjax params for `cell` from a Flax linen param tree (see the module docstring for the layouts).

    `variables` is `module.init(...)`'s `{"params": ...}` or the param tree itself. Returns the params
    `cell.init` would make, in its dtype.
    """
    where = "sj.interop.from_flax"
    _supported(cell, where)
    tree = variables["params"] if isinstance(variables, Mapping) and "params" in variables else variables
    return lay.check_fits(cell, _from(cell, tree, where, "variables['params']"), where)


def _leaf_to(cell: Cell, params) -> dict:
    p = {k: jnp.asarray(v) for k, v in params.items()}
    if cell.name == "lstm":
        x, h, b = (lay.split_blocks(p[k], "ifgo") for k in ("w_x", "w_h", "b"))
        return {**{f"i{g}": {"kernel": jnp.asarray(x[g])} for g in "ifgo"},
                **{f"h{g}": {"kernel": jnp.asarray(h[g]), "bias": jnp.asarray(b[g])} for g in "ifgo"}}
    if cell.name == "gru":
        x, h, bx, bh = (lay.split_blocks(p[k], "zrn") for k in ("w_x", "w_h", "b_x", "b_h"))
        out = {f"i{g}": {"kernel": jnp.asarray(x[g]), "bias": jnp.asarray(bx[g] + (bh[g] if g != "n" else 0))}
               for g in "zrn"}
        out.update({f"h{g}": {"kernel": jnp.asarray(h[g])} for g in "zr"})
        out["hn"] = {"kernel": jnp.asarray(h["n"]), "bias": jnp.asarray(bh["n"])}
        return out
    if cell.name == "simple_rnn":
        return {"i": {"kernel": p["w_x"], "bias": p["b"]}, "h": {"kernel": p["w_h"]}}
    if cell.name == "dense":
        return {"kernel": p["w"], **({"bias": p["b"]} if "b" in p else {})}
    return {"embedding": p["table"]} if cell.name == "embed" else {}


def _to(cell: Cell, params):
    if cell.name == "chain":
        return tuple(_to(c, p) for c, p in zip(lay.parts(cell), params))
    if cell.name == "bidirectional":
        return {"forward_rnn": {"cell": _leaf_to(cell.config["forward"], params.forward)},
                "backward_rnn": {"cell": _leaf_to(cell.config["backward"], params.backward)}}
    return _leaf_to(cell, params)


def to_flax(params, cell: Cell):
    """The Flax linen param tree for `cell`'s params (JAX arrays; see the module docstring for the layouts).

    Use it as `module.apply({"params": tree}, ...)` for a bare cell module, `{"params": {"cell": tree}}`
    for `nn.RNN(cell)`. The GRU bias fold makes a round trip seqjax -> Flax -> seqjax exact when `b_h`'s z
    and r blocks are zero (as `sj.gru` initialises them) and equal in value otherwise.
    """
    where = "sj.interop.to_flax"
    _supported(cell, where)
    lay.check_params(cell, params, where)
    return _to(cell, params)


def _carry_to(cell: Cell, carry, where: str):
    if cell.name == "chain":
        if not isinstance(carry, tuple) or len(carry) != len(lay.parts(cell)):
            raise TypeError(f"{where}: a chain's carry must be a tuple with one carry per part; got "
                            f"{type(carry).__name__}")
        return tuple(_carry_to(c, k, where) for c, k in zip(lay.parts(cell), carry))
    if cell.name == "bidirectional":
        if not isinstance(carry, BidirectionalCarry):
            raise TypeError(f"{where}: a bidirectional cell's carry must be BidirectionalCarry; got "
                            f"{type(carry).__name__}")
        return (_carry_to(cell.config["forward"], carry.forward, where),
                _carry_to(cell.config["backward"], carry.backward, where))
    if cell.name == "lstm":
        lay.carry_arrays("lstm", carry, where)
        return (carry.c, carry.h)
    if cell.name in lay.RECURRENT:
        lay.carry_arrays(cell.name, carry, where)
        return carry.h
    return ()


def carry_to_flax(carry, cell: Cell):
    """A seqjax carry in Flax's form: LSTM `(c, h)`, GRU / SimpleCell `h`, bidirectional `(forward, backward)`,
    a chain a tuple per part (`()` for stateless parts)."""
    where = "sj.interop.carry_to_flax"
    _supported(cell, where)
    return _carry_to(cell, carry, where)


def _carry_from(cell: Cell, carry, where: str, label: str):
    if cell.name == "chain":
        parts = lay.parts(cell)
        if not isinstance(carry, (tuple, list)) or len(carry) != len(parts):
            raise TypeError(f"{where}: for a chain, {label} must be a tuple with one Flax carry per part "
                            f"({len(parts)}); got {type(carry).__name__}")
        return tuple(_carry_from(c, k, where, f"{label}[{i}]") for i, (c, k) in enumerate(zip(parts, carry)))
    if cell.name == "bidirectional":
        if not isinstance(carry, (tuple, list)) or len(carry) != 2:
            raise TypeError(f"{where}: for a bidirectional cell, {label} must be nn.Bidirectional's "
                            f"(forward, backward) carry; got {type(carry).__name__}")
        return BidirectionalCarry(_carry_from(cell.config["forward"], carry[0], where, f"{label}[0]"),
                                  _carry_from(cell.config["backward"], carry[1], where, f"{label}[1]"))
    if cell.name not in lay.RECURRENT:
        return ()
    hidden = lay.hidden_size(cell, where)
    if cell.name == "lstm":
        if not isinstance(carry, (tuple, list)) or len(carry) != 2:
            raise TypeError(f"{where}: {label} must be a Flax LSTM carry (c, h); got {type(carry).__name__}")
        c, h = carry
    else:
        c, h = None, carry
    check = lambda a, n: lay.check_shape(lay.to_numpy(a, where, n), (None, hidden), where, n,  # noqa: E731
                                         " ([batch, hidden_size])")
    check(h, f"{label} h")
    if c is not None:
        check(c, f"{label} c")
    return lay.make_carry(cell.name, h, c)


def carry_from_flax(carry, cell: Cell):
    """The seqjax carry for `cell` from Flax's form (see `carry_to_flax`): LSTM `(c, h)` -> `LSTMCarry(h, c)`."""
    where = "sj.interop.carry_from_flax"
    _supported(cell, where)
    return _carry_from(cell, carry, where, "carry")
