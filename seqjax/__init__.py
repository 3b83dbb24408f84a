"""seqjax: recurrent sequence models in JAX with the recurrent state as an explicit value.

    carry, ys = sj.scan(cell, params, carry, xs)

Cells are NamedTuples of pure functions (`init`, `initial_carry`, `step`, ...); stacking is `chain`;
continuing a sequence is passing the carry on, resetting is passing a fresh one.
"""

from seqjax import data  # noqa: F401  (NumPy-level data shaping)
from seqjax import interop  # noqa: F401  (weights in and out of Keras, PyTorch, Flax)
from seqjax import feedback, losses, models, online, teacher, train  # noqa: F401
from seqjax.bidirectional import BidirectionalCarry, BidirectionalParams, bidirectional
from seqjax.cell import Cell, InputSpec
from seqjax.cells.chain import chain
from seqjax.cells.gru import GRUCarry, gru
from seqjax.cells.lstm import LSTMCarry, lstm
from seqjax.cells.simple_rnn import SimpleRNNCarry, simple_rnn
from seqjax.cells.stateless import activation, dense, embed
from seqjax.feedback import Feedback
from seqjax.ops import repeat
from seqjax.rollout import forecast, rollout
from seqjax.scan import scan
from seqjax.teacher import scheduled_sampling

__version__ = "0.1.0"

__all__ = [
    "BidirectionalCarry",
    "BidirectionalParams",
    "Cell",
    "Feedback",
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
    "feedback",
    "forecast",
    "gru",
    "interop",
    "losses",
    "lstm",
    "models",
    "online",
    "repeat",
    "rollout",
    "scan",
    "scheduled_sampling",
    "simple_rnn",
    "teacher",
    "train",
]
