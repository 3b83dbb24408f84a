"""Keras 3 layer weights <-> seqjax params, as the lists `layer.get_weights()` returns and `set_weights()` takes.

- `LSTM`: `[kernel (F, 4H), recurrent_kernel (H, 4H), bias (4H,)]`, gates i, f, c, o: seqjax's `w_x`, `w_h`,
  `b` as they are.
- `GRU`: `[kernel (F, 3H), recurrent_kernel (H, 3H), bias]`, gates z, r, h as in seqjax. `reset_after=True`:
  bias `(2, 3H)` is `[b_x; b_h]`. `reset_after=False`: bias `(3H,)` goes to `b_x` with `b_h = 0`, and
  `to_keras` writes `b_x + b_h` — exact, since in that form the recurrent candidate bias sits outside `r`.
  The two forms compute different things: weights of one never load into a cell of the other (error).
- `SimpleRNN`: `[kernel, recurrent_kernel, bias]`.
- Layers built with `use_bias=False` give two arrays; they load with zero biases.
- `Bidirectional(layer)`: the forward layer's weights, then the backward layer's.
- `Dense` (also inside `TimeDistributed`): `[kernel, bias]` (`[kernel]` without bias); `Embedding`:
  `[embeddings]`; `Activation` and other weightless layers: `[]`.
- A `sj.chain`: one list per part (`[layer.get_weights() for layer in layers]`), or one flat list as
  `model.get_weights()` gives (weightless layers such as InputLayer, Masking, Dropout, RepeatVector add
  nothing; per-layer lists of another length are flattened so; the flat form assumes recurrent layers
  with biases).

Activations, `return_sequences`, `go_backwards` and `merge_mode` are layer arguments, not weights: build
the Keras layer (or the seqjax cell) with the same ones — both default to tanh / sigmoid.
"""

from __future__ import annotations

import numpy as np

from seqjax.bidirectional import BidirectionalCarry, BidirectionalParams
from seqjax.cell import Cell
from seqjax.interop import _layout as lay

_KERAS_NAME = {"lstm": "LSTM", "gru": "GRU", "simple_rnn": "SimpleRNN", "dense": "Dense", "embed": "Embedding",
               "activation": "Activation"}


def _supported(cell: Cell, where: str) -> Cell:
    lay.check_converter_cell(cell, where)
    if cell.name not in _KERAS_NAME and cell.name not in ("chain", "bidirectional"):
        raise ValueError(f"{where}: no Keras layer corresponds to a cell named {cell.name!r}; supported: "
                         f"sj.lstm, sj.gru, sj.simple_rnn, sj.dense, sj.embed, sj.activation, sj.bidirectional, "
                         f"sj.chain of them")
    if cell.name == "bidirectional":
        lay.check_bidirectional_sides(cell, where, "Keras's Bidirectional wraps one recurrent layer")
    return cell


def _count(cell: Cell, where: str) -> int:
    """How many arrays `cell` takes from a flat `model.get_weights()` list."""
    _supported(cell, where)
    if cell.name in lay.RECURRENT:
        return 3
    if cell.name == "bidirectional":
        return _count(cell.config["forward"], where) + _count(cell.config["backward"], where)
    if cell.name == "chain":
        return sum(_count(p, where) for p in lay.parts(cell))
    if cell.name == "dense":
        return len(lay.leaf_dtypes(cell, 1))
    return 1 if cell.name == "embed" else 0


def _is_list(w) -> bool:
    return isinstance(w, (list, tuple))


def _recurrent_from(cell: Cell, arrays: list, where: str, label: str) -> dict:
    kind, hidden = cell.name, lay.hidden_size(cell, where)
    cols = lay.BLOCKS[kind] * hidden
    name = _KERAS_NAME[kind]
    if len(arrays) not in (2, 3):
        raise ValueError(f"{where}: Keras {name} weights are [kernel, recurrent_kernel, bias] (no bias with "
                         f"use_bias=False); {label} has {len(arrays)} arrays")
    hint = f" for {lay.describe(cell)}"
    kernel = lay.check_shape(arrays[0], (None, cols), where, f"{label}[0] (kernel)", hint)
    recurrent = lay.check_shape(arrays[1], (hidden, cols), where, f"{label}[1] (recurrent_kernel)", hint)
    tree = {"w_x": kernel, "w_h": recurrent}
    bias = arrays[2] if len(arrays) == 3 else None
    if kind == "gru":
        reset_after = cell.config["reset_after"]
        zeros = np.zeros(cols, kernel.dtype)
        if bias is None:
            tree["b_x"], tree["b_h"] = zeros, zeros
        elif bias.ndim == 2:
            lay.check_shape(bias, (2, cols), where, f"{label}[2] (bias)", hint)
            if not reset_after:
                raise ValueError(f"{where}: {label} is from a Keras GRU(reset_after=True) (bias of shape (2, {cols})) "
                                 f"but the cell is {lay.describe(cell)}; the forms compute different candidates — "
                                 f"build the cell with reset_after=True")
            tree["b_x"], tree["b_h"] = bias[0], bias[1]
        else:
            lay.check_shape(bias, (cols,), where, f"{label}[2] (bias)", hint)
            if reset_after:
                raise ValueError(f"{where}: {label} is from a Keras GRU(reset_after=False) (bias of shape ({cols},)) "
                                 f"but the cell is {lay.describe(cell)}; the forms compute different candidates — "
                                 f"build the cell with sj.gru({hidden}, reset_after=False)")
            tree["b_x"], tree["b_h"] = bias, zeros
    else:
        tree["b"] = np.zeros(cols, kernel.dtype) if bias is None else lay.check_shape(
            bias, (cols,), where, f"{label}[2] (bias)", hint)
    return lay.as_params(tree, cell, int(kernel.shape[0]), where)


def _leaf_from(cell: Cell, ws, where: str, label: str):
    if not _is_list(ws):
        raise TypeError(f"{where}: {label} must be a list of arrays (layer.get_weights()); got {type(ws).__name__}")
    arrays = [lay.to_numpy(w, where, f"{label}[{i}]") for i, w in enumerate(ws)]
    if cell.name in lay.RECURRENT:
        return _recurrent_from(cell, arrays, where, label)
    want = {"dense": "[kernel, bias] ([kernel] without bias)", "embed": "[embeddings]", "activation": "[]"}[cell.name]
    if cell.name == "dense":
        keys = ("w", "b")
        if len(arrays) not in (1, 2):
            raise ValueError(f"{where}: Keras Dense weights are {want}; {label} has {len(arrays)} arrays")
        return lay.as_params(dict(zip(keys, arrays)), cell, int(arrays[0].shape[0]), where)
    if len(arrays) != (1 if cell.name == "embed" else 0):
        raise ValueError(f"{where}: Keras {_KERAS_NAME[cell.name]} weights are {want}; {label} has {len(arrays)} "
                         f"arrays")
    return lay.as_params({"table": arrays[0]}, cell, None, where) if arrays else {}


def _from(cell: Cell, ws, where: str, label: str):
    _supported(cell, where)
    if not _is_list(ws):
        raise TypeError(f"{where}: {label} must be a list of arrays (layer.get_weights()); got {type(ws).__name__}")
    if cell.name == "chain":
        parts = lay.parts(cell)
        if ws and all(_is_list(w) for w in ws):
            if len(ws) == len(parts):  # one list per part
                return tuple(_from(p, w, where, f"{label}[{i}]") for i, (p, w) in enumerate(zip(parts, ws)))
            # per-layer lists of a model with weightless layers too (InputLayer, Masking, Dropout): flatten
            ws = [a for w in ws for a in w]
        counts = [_count(p, where) for p in parts]
        if len(ws) != sum(counts) or any(_is_list(w) for w in ws):
            raise ValueError(f"{where}: for this chain, {label} must be one list per part ({len(parts)} lists) or a "
                             f"flat list of {sum(counts)} arrays ({counts} per part, as model.get_weights() gives "
                             f"with biases); got {len(ws)} arrays")
        out, start = [], 0
        for i, (p, n) in enumerate(zip(parts, counts)):
            out.append(_from(p, list(ws[start:start + n]), where, f"{label}[{start}:{start + n}]"))
            start += n
        return tuple(out)
    if cell.name == "bidirectional":
        fwd, bwd = cell.config["forward"], cell.config["backward"]
        if len(ws) % 2:
            raise ValueError(f"{where}: Keras Bidirectional weights are the forward layer's then the backward "
                             f"layer's (an even count); {label} has {len(ws)} arrays")
        half = len(ws) // 2
        return BidirectionalParams(_from(fwd, list(ws[:half]), where, f"{label}[:{half}]"),
                                   _from(bwd, list(ws[half:]), where, f"{label}[{half}:]"))
    return _leaf_from(cell, ws, where, label)


def from_keras(weights, cell: Cell):
    """seqjax params for `cell` from Keras 3 weights (`layer.get_weights()`; see the module docstring).

    Returns the params `cell.init` would make, in its dtype. Raises ValueError when the weights do not fit
    the cell (kind, hidden size, GRU form, count).
    """
    where = "sj.interop.from_keras"
    return lay.check_fits(cell, _from(cell, weights, where, "weights"), where)


def _leaf_to(cell: Cell, params) -> list[np.ndarray]:
    p = lay.params_to_numpy(params)
    if cell.name == "gru":
        bias = np.stack([p["b_x"], p["b_h"]]) if cell.config["reset_after"] else p["b_x"] + p["b_h"]
        return [p["w_x"], p["w_h"], bias]
    if cell.name in lay.RECURRENT:
        return [p["w_x"], p["w_h"], p["b"]]
    if cell.name == "dense":
        return [p["w"]] + ([p["b"]] if "b" in p else [])
    return [p["table"]] if cell.name == "embed" else []


def _to(cell: Cell, params, where: str):
    _supported(cell, where)
    if cell.name == "chain":
        return [_to(c, p, where) for c, p in zip(lay.parts(cell), params)]
    if cell.name == "bidirectional":
        return _leaf_to(cell.config["forward"], params.forward) + _leaf_to(cell.config["backward"], params.backward)
    return _leaf_to(cell, params)


def to_keras(params, cell: Cell) -> list:
    """Keras 3 weights for `cell`'s params: the list `layer.set_weights()` takes (NumPy arrays).

    A chain gives one list per part (`for layer, w in zip(layers, ws): layer.set_weights(w)`); a
    bidirectional cell gives the forward then the backward weights in one list. A `reset_after=True` GRU
    needs `keras.layers.GRU(H)` (bias `(2, 3H)`), a `reset_after=False` one `GRU(H, reset_after=False)`.
    """
    where = "sj.interop.to_keras"
    _supported(cell, where)
    lay.check_params(cell, params, where)
    return _to(cell, params, where)


def _carry_to(cell: Cell, carry, where: str) -> list:
    if cell.name == "chain":
        if not isinstance(carry, tuple) or len(carry) != len(lay.parts(cell)):
            raise TypeError(f"{where}: a chain's carry must be a tuple with one carry per part; got "
                            f"{type(carry).__name__}")
        return [_carry_to(c, k, where) for c, k in zip(lay.parts(cell), carry)]
    if cell.name == "bidirectional":
        if not isinstance(carry, BidirectionalCarry):
            raise TypeError(f"{where}: a bidirectional cell's carry must be BidirectionalCarry; got "
                            f"{type(carry).__name__}")
        return (_carry_to(cell.config["forward"], carry.forward, where)
                + _carry_to(cell.config["backward"], carry.backward, where))
    if cell.name in lay.RECURRENT:
        return list(lay.carry_arrays(cell.name, carry, where))
    return []


def carry_to_keras(carry, cell: Cell) -> list:
    """A seqjax carry as Keras states (NumPy): LSTM `[h, c]`, GRU / SimpleRNN `[h]`, Bidirectional the forward
    then the backward states (the order of `return_state=True` and of `initial_state=`), a chain one list
    per part (`[]` for stateless parts)."""
    where = "sj.interop.carry_to_keras"
    _supported(cell, where)
    return _carry_to(cell, carry, where)


def _states_needed(cell: Cell) -> int:
    if cell.name == "bidirectional":
        return _states_needed(cell.config["forward"]) + _states_needed(cell.config["backward"])
    return {"lstm": 2, "gru": 1, "simple_rnn": 1}.get(cell.name, 0)


def _carry_from(cell: Cell, states, where: str, label: str):
    if not _is_list(states):
        raise TypeError(f"{where}: {label} must be a list of state arrays; got {type(states).__name__}")
    if cell.name == "chain":
        parts = lay.parts(cell)
        if len(states) != len(parts):
            raise ValueError(f"{where}: for a chain, {label} must hold one list of states per part ({len(parts)}); "
                             f"got {len(states)}")
        return tuple(_carry_from(c, s, where, f"{label}[{i}]") for i, (c, s) in enumerate(zip(parts, states)))
    need = _states_needed(cell)
    if len(states) != need:
        raise ValueError(f"{where}: sj.{cell.name} takes {need} Keras state arrays in {label}; got {len(states)}")
    if cell.name == "bidirectional":
        fwd, bwd = cell.config["forward"], cell.config["backward"]
        n = _states_needed(fwd)
        return BidirectionalCarry(_carry_from(fwd, list(states[:n]), where, label),
                                  _carry_from(bwd, list(states[n:]), where, label))
    if cell.name not in lay.RECURRENT:
        return ()
    hidden = lay.hidden_size(cell, where)
    arrays = [lay.check_shape(lay.to_numpy(s, where, f"{label}[{i}]"), (None, hidden), where, f"{label}[{i}]",
                              " ([batch, hidden_size])") for i, s in enumerate(states)]
    return lay.make_carry(cell.name, *arrays)


def carry_from_keras(states, cell: Cell):
    """The seqjax carry for `cell` from Keras states (the lists `carry_to_keras` gives)."""
    where = "sj.interop.carry_from_keras"
    _supported(cell, where)
    return _carry_from(cell, states, where, "states")
