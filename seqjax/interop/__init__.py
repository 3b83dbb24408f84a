"""Move trained weights and carries between seqjax and PyTorch, Keras 3 and Flax linen.

Every converter takes the seqjax cell the weights belong to (`sj.lstm`, `sj.gru` in both `reset_after`
forms, `sj.simple_rnn`, `sj.chain` of them, `sj.bidirectional`) and either gives params exactly as
`cell.init` would make them (`from_*`) or the framework's own layout (`to_*`). Gate blocks are reordered
and double biases folded or split as each module's docstring says; where a framework cannot represent a
cell (a `reset_after=False` GRU in PyTorch or Flax, a dense head in an `nn.LSTM` state dict, other
activations in PyTorch) the converter raises a ValueError instead of approximating.

    params = sj.interop.from_torch(torch_lstm.state_dict(), sj.chain(sj.lstm(64), sj.lstm(64)))
    params = sj.interop.from_keras(keras_layer.get_weights(), sj.gru(32, reset_after=False))
    params = sj.interop.from_flax(variables, sj.lstm(16))
"""

from seqjax.interop.flax import carry_from_flax, carry_to_flax, from_flax, to_flax
from seqjax.interop.keras import carry_from_keras, carry_to_keras, from_keras, to_keras
from seqjax.interop.torch import TorchState, carry_from_torch, carry_to_torch, from_torch, to_torch

__all__ = [
    "TorchState",
    "carry_from_flax",
    "carry_from_keras",
    "carry_from_torch",
    "carry_to_flax",
    "carry_to_keras",
    "carry_to_torch",
    "from_flax",
    "from_keras",
    "from_torch",
    "to_flax",
    "to_keras",
    "to_torch",
]
