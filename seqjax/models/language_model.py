"""The second seed's language model: Embedding -> GRU -> GRU -> per-step Dense -> softmax.

    lm = sj.models.language_model(vocab_size, embed_dim=32, hidden=(512, 128))
    params = lm.init(key)
    step = seqjax.train.make_train_step(lm.objective, optax.adam(1e-2))
    state, metrics = step(state, (inputs_BT, targets_BT, mask_BT))       # masked sparse cross-entropy
    tokens_BS = lm.generate(state.params, prompt_BT, 20, key, temperature=0.8, top_k=5)

The model outputs logits; Keras's softmax layer is `jax.nn.softmax(logits)`, and the loss takes the
logits directly (cross-entropy from logits is the stable form of softmax + sparse cross-entropy).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax.numpy as jnp

from seqjax import feedback as fbk
from seqjax import losses
from seqjax.cell import Cell, check_size
from seqjax.cells.chain import chain
from seqjax.cells.gru import gru
from seqjax.cells.stateless import dense, embed
from seqjax.rollout import forecast
from seqjax.scan import scan
from seqjax.train.objective import Objective, objective


class LanguageModel(NamedTuple):
    """The cell and the functions of the model.

    - `cell`: `chain(embed, gru, ..., dense(vocab))`, token ids `[B]` per step -> logits `[B, vocab]`
    - `init(key) -> params`
    - `logits(params, tokens [B, T]) -> [B, T, vocab]` from a fresh carry
    - `objective`: masked sparse cross-entropy from logits, batches `(inputs [B, T], targets [B, T], mask)`
    - `generate(params, prompt [B, T], steps, key, *, temperature=1.0, top_k=None) -> [B, steps]` int32:
      warm up on the prompt, then sample each next token and feed it back (one compiled `sj.forecast`);
      `[:, 0]` follows the prompt. Temperature 0 is greedy. The same key gives the same tokens.
    """

    cell: Cell
    init: Callable
    logits: Callable
    objective: Objective
    generate: Callable


def language_model(vocab_size: int, embed_dim: int, hidden=(512, 128)) -> LanguageModel:
    """`embed(vocab_size, embed_dim)`, one `gru(h)` per entry of `hidden`, `dense(vocab_size)`."""
    where = "sj.models.language_model"
    check_size(vocab_size, where, "vocab_size")
    if not hidden:
        raise ValueError(f"{where}: hidden must name at least one GRU size; got {hidden!r}")
    cell = chain(embed(vocab_size, embed_dim), *[gru(h) for h in hidden], dense(vocab_size))

    def logits(params, tokens_BT):
        tokens_BT = jnp.asarray(tokens_BT)
        return scan(cell, params, cell.initial_carry(tokens_BT.shape[0]), tokens_BT)[1]

    def generate(params, prompt_BT, steps: int, key, *, temperature: float = 1.0, top_k: Optional[int] = None):
        prompt_BT = jnp.asarray(prompt_BT)
        sampler = fbk.sample_token(temperature=temperature, top_k=top_k)
        _, logits_BSV = forecast(cell, params, cell.initial_carry(prompt_BT.shape[0]), prompt_BT, steps,
                                 sampler, key=key)
        return fbk.next_inputs(sampler, logits_BSV, key=key)

    return LanguageModel(cell, lambda key: cell.init(key, None), logits,
                         objective(cell, losses.sparse_categorical_crossentropy), generate)
