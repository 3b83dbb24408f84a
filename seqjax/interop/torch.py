"""PyTorch `nn.LSTM` / `nn.GRU` / `nn.RNN` state dicts <-> seqjax params. torch is never imported.

PyTorch keeps `weight_ih_l{k}` `[blocks*H, F]` and `weight_hh_l{k}` `[blocks*H, H]` (transposed against
seqjax's `w_x [F, blocks*H]`, `w_h [H, blocks*H]`) and two biases, `bias_ih_l{k}` and `bias_hh_l{k}`;
the backward direction of a bidirectional module has the suffix `_reverse`.

- LSTM (gates i, f, g, o in both): `b = bias_ih + bias_hh`; `to_torch` writes `bias_ih = b`, `bias_hh = 0`.
- GRU: PyTorch's GRU is exactly `sj.gru(H)` (`reset_after=True`) with `b_x = bias_ih`, `b_h = bias_hh`; the
  gate blocks are reordered from PyTorch's r, z, n to seqjax's z, r, n. `reset_after=False` has no PyTorch
  form, and converting it is an error.
- RNN: `b = bias_ih + bias_hh`; `to_torch` writes `bias_ih = b`, `bias_hh = 0`. `nn.RNN(nonlinearity=...)`
  is not in the state dict: build `sj.simple_rnn(H, activation="relu")` for `nonlinearity="relu"`.

Layers: one recurrent cell is `num_layers=1`; `sj.chain` of k recurrent cells of one kind and one hidden
size is `num_layers=k`; `sj.bidirectional(fwd, bwd)` (merge "concat") is `bidirectional=True`; a chain of
k such layers is `num_layers=k, bidirectional=True`. `bias=False` modules load with zero biases.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple, Optional

import numpy as np

from seqjax.bidirectional import BidirectionalCarry, BidirectionalParams
from seqjax.cell import Cell
from seqjax.interop import _layout as lay

_TORCH_ORDER = {"lstm": "ifgo", "gru": "rzn", "simple_rnn": "h"}
_TORCH_NAME = {"lstm": "nn.LSTM", "gru": "nn.GRU", "simple_rnn": "nn.RNN"}
_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class TorchState(NamedTuple):
    """The final state of a PyTorch RNN module: `h_n [layers * directions, B, H]`, `c_n` likewise (LSTM only)."""

    h_n: np.ndarray
    c_n: Optional[np.ndarray] = None


def _check_math(cell: Cell, where: str):
    """PyTorch's modules compute with fixed activations; anything else cannot be represented."""
    cfg = cell.config
    act = lay.activation_name(cfg.get("activation", "tanh"))
    if cell.name == "simple_rnn":
        if act not in ("tanh", "relu"):
            raise ValueError(f"{where}: nn.RNN computes with nonlinearity 'tanh' or 'relu'; this sj.simple_rnn uses "
                             f"activation={cfg.get('activation')!r}")
        return
    rec = lay.activation_name(cfg.get("recurrent_activation", "sigmoid"))
    if act != "tanh" or rec != "sigmoid":
        raise ValueError(f"{where}: {_TORCH_NAME[cell.name]} computes with tanh and sigmoid; this sj.{cell.name} uses "
                         f"activation={cfg.get('activation')!r}, "
                         f"recurrent_activation={cfg.get('recurrent_activation')!r}")
    if cell.name == "gru" and not cfg.get("reset_after", True):
        raise ValueError(f"{where}: PyTorch's nn.GRU is the reset_after=True form (r * (h U_n + b_hn)); "
                         f"{lay.describe(cell)} applies r before the recurrent matmul and cannot be represented")


def _layers(cell: Cell, where: str) -> list[tuple[Cell, ...]]:
    """The cell as PyTorch layers, each a tuple of its direction cells (forward[, backward])."""
    lay.check_converter_cell(cell, where)
    stack = lay.parts(cell) if cell.name == "chain" else (cell,)
    layers = []
    for i, part in enumerate(stack):
        at = f"part {i} of the chain" if cell.name == "chain" else "the cell"
        if part.name in lay.RECURRENT:
            dirs = (part,)
        elif part.name == "bidirectional":
            if part.config["merge"] != "concat":
                raise ValueError(f"{where}: a bidirectional PyTorch module concatenates both directions; {at} merges "
                                 f"with {part.config['merge']!r} — use merge='concat'")
            dirs = (part.config["forward"], part.config["backward"])
        else:
            raise ValueError(f"{where}: a PyTorch nn.LSTM/nn.GRU/nn.RNN state_dict holds only recurrent layers; {at} "
                             f"is sj.{part.name} — convert it separately (e.g. to an nn.Linear)")
        for d in dirs:
            if d.name not in lay.RECURRENT:
                raise ValueError(f"{where}: each direction of {at} must be sj.lstm, sj.gru or sj.simple_rnn for "
                                 f"PyTorch; got sj.{d.name}")
            _check_math(d, where)
        layers.append(dirs)
    cells = [d for dirs in layers for d in dirs]
    kinds = sorted({d.name for d in cells})
    if len(kinds) > 1:
        raise ValueError(f"{where}: one PyTorch module has one kind of layer; the cell mixes {', '.join(kinds)}")
    sizes = sorted({lay.hidden_size(d, where) for d in cells})
    if len(sizes) > 1:
        raise ValueError(f"{where}: one PyTorch module has one hidden_size for every layer and direction; the cell "
                         f"has {sizes}")
    if len({len(dirs) for dirs in layers}) > 1:
        raise ValueError(f"{where}: in one PyTorch module every layer is bidirectional or none is; the cell mixes "
                         f"both")
    return layers


def _key(name: str, layer: int, direction: int) -> str:
    return f"{name}_l{layer}{'_reverse' if direction else ''}"


def _layer_params(cell: Cell, params) -> list[tuple]:
    stack = params if cell.name == "chain" else (params,)
    return [(p.forward, p.backward) if isinstance(p, BidirectionalParams) else (p,) for p in stack]


def _join(cell: Cell, per_layer: list[tuple]):
    stack = lay.parts(cell) if cell.name == "chain" else (cell,)
    joined = [BidirectionalParams(*ps) if part.name == "bidirectional" else ps[0] for part, ps in zip(stack, per_layer)]
    return tuple(joined) if cell.name == "chain" else joined[0]


def _select(state_dict, prefix: str, where: str) -> dict:
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"{where}: state_dict must be a mapping (module.state_dict()); got {type(state_dict).__name__}")
    if not isinstance(prefix, str):
        raise TypeError(f"{where}: prefix must be a str; got {type(prefix).__name__}")
    selected = {k[len(prefix):]: v for k, v in state_dict.items() if str(k).startswith(prefix)}
    if not selected:
        raise ValueError(f"{where}: no key of state_dict starts with prefix {prefix!r}; keys: {sorted(state_dict)[:8]}")
    return selected


def _check_keys(sd: dict, layers, has_bias: bool, where: str) -> None:
    """The state dict has exactly the keys of the module the cell describes, else a ValueError saying why."""
    kind, n_dirs = layers[0][0].name, len(layers[0])
    names = _NAMES if has_bias else _NAMES[:2]
    required = [_key(n, li, d) for li in range(len(layers)) for d in range(n_dirs) for n in names]
    module = (f"{_TORCH_NAME[kind]}(hidden_size={lay.hidden_size(layers[0][0], where)}, num_layers={len(layers)}, "
              f"bidirectional={n_dirs == 2})")
    unexpected = sorted(set(sd) - set(required))
    if unexpected:
        layer_ids = [int(m.group(1)) for k in unexpected if (m := re.search(r"_l(\d+)", k))]
        hint = ""
        if any(k.startswith("weight_hr") for k in unexpected):
            hint = " — a projected LSTM (proj_size > 0) has no seqjax form"
        elif any(k.endswith("_reverse") for k in unexpected) and n_dirs == 1:
            hint = " — the module is bidirectional: use sj.bidirectional(fwd, bwd)"
        elif any(i >= len(layers) for i in layer_ids):
            hint = f" — the module has more layers than the cell's {len(layers)}"
        raise ValueError(f"{where}: unexpected keys for a {module}: {unexpected}{hint}")
    missing = [k for k in required if k not in sd]
    if missing:
        raise ValueError(f"{where}: missing keys for a {module}: {missing}")


def _from_layout(kind: str, w_ih, w_hh, b_ih, b_hh) -> dict:
    """One direction of one layer, PyTorch layout -> seqjax layout (NumPy)."""
    order, gates = _TORCH_ORDER[kind], lay.GATES[kind]
    tree = {"w_x": lay.reorder_blocks(w_ih.T, order, gates), "w_h": lay.reorder_blocks(w_hh.T, order, gates)}
    if kind == "gru":  # PyTorch's GRU is the reset_after=True form: both biases kept as they are
        tree["b_x"], tree["b_h"] = lay.reorder_blocks(b_ih, order, gates), lay.reorder_blocks(b_hh, order, gates)
    else:  # the two biases only ever appear summed
        tree["b"] = b_ih + b_hh
    return tree


def _to_layout(kind: str, p: dict) -> tuple:
    """One direction of one layer, seqjax layout -> PyTorch's (weight_ih, weight_hh, bias_ih, bias_hh)."""
    order, gates = _TORCH_ORDER[kind], lay.GATES[kind]
    w_ih = lay.reorder_blocks(p["w_x"], gates, order).T
    w_hh = lay.reorder_blocks(p["w_h"], gates, order).T
    if kind == "gru":
        return w_ih, w_hh, lay.reorder_blocks(p["b_x"], gates, order), lay.reorder_blocks(p["b_h"], gates, order)
    return w_ih, w_hh, p["b"], np.zeros_like(p["b"])


def from_torch(state_dict, cell: Cell, *, prefix: str = ""):
    """seqjax params for `cell` from a PyTorch `nn.LSTM` / `nn.GRU` / `nn.RNN` `state_dict()`.

    Values may be tensors (detached and copied to CPU; torch is not imported) or NumPy arrays. `prefix`
    selects one module's entries from a larger model's state dict (e.g. `"encoder.rnn."`). Returns the
    params `cell.init` would make, in its dtype. Raises ValueError when the state dict and the cell differ
    (kind, hidden size, layers, directions) or when the cell's maths has no PyTorch form.
    """
    where = "sj.interop.from_torch"
    layers = _layers(cell, where)
    sd = _select(state_dict, prefix, where)
    has_bias = any(k.startswith("bias_") for k in sd)
    _check_keys(sd, layers, has_bias, where)
    kind, n_dirs = layers[0][0].name, len(layers[0])
    hidden = lay.hidden_size(layers[0][0], where)
    rows = lay.BLOCKS[kind] * hidden
    hint = f" ({lay.BLOCKS[kind]} gate blocks x hidden_size {hidden})"
    per_layer, in_features = [], None
    for li, dirs in enumerate(layers):
        ps = []
        for d, dcell in enumerate(dirs):
            def get(name, shape):
                key = _key(name, li, d)
                a = lay.to_numpy(sd[key], where, f"state_dict[{prefix + key!r}]")
                return lay.check_shape(a, shape, where, f"state_dict[{prefix + key!r}]", hint)

            w_ih, w_hh = get("weight_ih", (rows, in_features)), get("weight_hh", (rows, hidden))
            b_ih, b_hh = ((get("bias_ih", (rows,)), get("bias_hh", (rows,))) if has_bias
                          else (np.zeros(rows, w_ih.dtype),) * 2)
            tree = _from_layout(kind, w_ih, w_hh, b_ih, b_hh)
            ps.append(lay.as_params(tree, dcell, int(w_ih.shape[1]), where))
        in_features = n_dirs * hidden  # the next layer reads both directions, concatenated
        per_layer.append(tuple(ps))
    return lay.check_fits(cell, _join(cell, per_layer), where)


def to_torch(params, cell: Cell) -> dict[str, np.ndarray]:
    """The `state_dict` of the PyTorch module equivalent to `cell`, as NumPy arrays (keys in PyTorch's order).

    Load it with `module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})` into
    `nn.LSTM/GRU/RNN(F, H, num_layers=<layers>, bidirectional=<...>, bias=True)`. LSTM and RNN biases go
    to `bias_ih` with `bias_hh = 0` (their sum is what the maths uses). Raises ValueError when the cell
    has no PyTorch form (mixed kinds or sizes, dense parts, GRU reset_after=False, other activations).
    """
    where = "sj.interop.to_torch"
    layers = _layers(cell, where)
    lay.check_params(cell, params, where)
    kind = layers[0][0].name
    out = {}
    for li, ps in enumerate(_layer_params(cell, params)):
        for d, p in enumerate(ps):
            for name, a in zip(_NAMES, _to_layout(kind, lay.params_to_numpy(p))):
                out[_key(name, li, d)] = np.ascontiguousarray(a)
    return out


def carry_to_torch(carry, cell: Cell) -> TorchState:
    """A seqjax carry as PyTorch's final state: `TorchState(h_n, c_n)`, `[layers * directions, B, H]` NumPy arrays.

    Pass `(h_n, c_n)` (LSTM) or `h_n` (GRU/RNN), as tensors, as the module's initial state; `c_n` is None
    for GRU and RNN.
    """
    where = "sj.interop.carry_to_torch"
    layers = _layers(cell, where)
    kind = layers[0][0].name
    stack = carry if cell.name == "chain" else (carry,)
    if not isinstance(stack, tuple) or len(stack) != len(layers):
        raise TypeError(f"{where}: carry must be the carry of this cell ({len(layers)} layer(s)); got "
                        f"{type(carry).__name__}")
    hs, cs = [], []
    for dirs, c in zip(layers, stack):
        if len(dirs) == 2 and not isinstance(c, BidirectionalCarry):
            raise TypeError(f"{where}: a bidirectional layer's carry must be BidirectionalCarry; got "
                            f"{type(c).__name__}")
        per_dir = (c.forward, c.backward) if len(dirs) == 2 else (c,)
        for dc in per_dir:
            arrays = lay.carry_arrays(kind, dc, where)
            hs.append(arrays[0])
            if kind == "lstm":
                cs.append(arrays[1])
    return TorchState(np.stack(hs), np.stack(cs) if kind == "lstm" else None)


def carry_from_torch(state, cell: Cell):
    """The seqjax carry for `cell` from PyTorch's final state: `(h_n, c_n)` for LSTM, `h_n` for GRU/RNN.

    `h_n` / `c_n` are `[layers * directions, B, H]` tensors or arrays (what the module returns).
    """
    where = "sj.interop.carry_from_torch"
    layers = _layers(cell, where)
    kind = layers[0][0].name
    hidden = lay.hidden_size(layers[0][0], where)
    if kind == "lstm":
        if not isinstance(state, tuple) or len(state) != 2 or state[1] is None:
            raise TypeError(f"{where}: state must be the LSTM's (h_n, c_n) pair; got {type(state).__name__}")
        h_n, c_n = state
    else:
        h_n, c_n = (state[0], None) if isinstance(state, tuple) else (state, None)
    h_n = lay.to_numpy(h_n, where, "h_n")
    rows = len(layers) * len(layers[0])
    shape = (rows, h_n.shape[1] if h_n.ndim == 3 else None, hidden)
    hint = " ([layers * directions, batch, hidden_size])"
    lay.check_shape(h_n, shape, where, "h_n", hint)
    if c_n is not None:
        c_n = lay.check_shape(lay.to_numpy(c_n, where, "c_n"), h_n.shape, where, "c_n", hint)
    carries, i = [], 0
    for dirs in layers:
        per_dir = []
        for _ in dirs:
            per_dir.append(lay.make_carry(kind, h_n[i], None if c_n is None else c_n[i]))
            i += 1
        carries.append(BidirectionalCarry(*per_dir) if len(dirs) == 2 else per_dir[0])
    return tuple(carries) if cell.name == "chain" else carries[0]
