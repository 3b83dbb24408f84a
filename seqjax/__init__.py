"""seqjax: recurrent sequence models in JAX with the recurrent state as an explicit value.

    carry, ys = sj.scan(cell, params, carry, xs)

Cells are NamedTuples of pure functions (`init`, `initial_carry`, `step`, ...); stacking is `chain`;
continuing a sequence is passing the carry on, resetting is passing a fresh one.
"""

from seqjax import data  # noqa: F401  (NumPy-level data shaping)
from seqjax import interop  # noqa: F401  (weights in and out of Keras, PyTorch, Flax)
from seqjax.bidirectional import BidirectionalCarry, BidirectionalParams, bidirectional
from seqjax.cell import Cell, InputSpec
from seqjax.cells.chain import chain
from seqjax.cells.gru import GRUCarry, gru
from seqjax.cells.lstm import LSTMCarry, lstm
from seqjax.cells.simple_rnn import SimpleRNNCarry, simple_rnn
from seqjax.cells.stateless import activation, dense, embed
from seqjax.ops import repeat
from seqjax.rollout import forecast, rollout
from seqjax.scan import scan

__version__ = "0.1.0"

__all__ = [
    "BidirectionalCarry",
    "BidirectionalParams",
    "Cell",
    "GRUCarry",
    "InputSpec",
    "LSTMCarry",
    "SimpleRNNCarry",
    "activation",
    "bidirectional",
    "chain",
    "data",
    "dense",
    "embed",
    "forecast",
    "gru",
    "interop",
    "lstm",
    "repeat",
    "rollout",
    "scan",
    "simple_rnn",
]
