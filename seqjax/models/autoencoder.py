"""The LSTM autoencoder of the first seed: many-to-one encoder, repeat, many-to-many decoder, fit on `(X, X)`.

    ae = sj.models.autoencoder(features=2, encoder_hidden=(32,), code_size=8, decoder_hidden=(32,))
    params = ae.init(key)
    step = seqjax.train.make_train_step(ae.objective, optax.adam(1e-2))
    state, metrics = step(seqjax.train.init_state(params, optax.adam(1e-2)), (X, X))
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from seqjax import losses
from seqjax.cell import Cell, check_size
from seqjax.cells.chain import chain
from seqjax.cells.lstm import lstm
from seqjax.cells.stateless import dense
from seqjax.ops import repeat
from seqjax.scan import scan
from seqjax.train.objective import Objective, stateless_objective


class AutoencoderParams(NamedTuple):
    encoder: Any
    decoder: Any


class Autoencoder(NamedTuple):
    """The cells and the functions of the model.

    - `init(key) -> AutoencoderParams`
    - `encode(params, xs [B, T, F]) -> code [B, code_size]`: the encoder's output at the last step
    - `decode(params, code [B, code_size], steps) -> [B, steps, F]`: the code repeated at every step
    - `reconstruct(params, xs) -> [B, T, F]`: `decode(encode(xs), T)`
    - `objective`: a `seqjax.train.Objective`, mse of `reconstruct(batch.inputs)` against `batch.targets`
    """

    encoder: Cell
    decoder: Cell
    init: Callable
    encode: Callable
    decode: Callable
    reconstruct: Callable
    objective: Objective


def autoencoder(features: int, *, encoder_hidden=(32,), code_size: int = 16, decoder_hidden=(32,)) -> Autoencoder:
    """Encoder `chain(lstm(h) for h in encoder_hidden, lstm(code_size))`, many-to-one; decoder
    `chain(lstm(h) for h in decoder_hidden, dense(features))` over the repeated code.

    The seed's decoder ends in `LSTM(features)`; a per-step `dense` head is used instead so the
    reconstruction is not squashed into (-1, 1).
    """
    where = "sj.models.autoencoder"
    check_size(features, where, "features")
    encoder = chain(*[lstm(h) for h in encoder_hidden], lstm(code_size))
    decoder = chain(*[lstm(h) for h in decoder_hidden], dense(features))

    def init(key):
        k_enc, k_dec = jax.random.split(key)
        return AutoencoderParams(encoder.init(k_enc, features), decoder.init(k_dec, code_size))

    def encode(params, xs_BTF):
        xs_BTF = jnp.asarray(xs_BTF)
        return scan(encoder, params.encoder, encoder.initial_carry(xs_BTF.shape[0]), xs_BTF)[1][:, -1]

    def decode(params, code_BC, steps):
        code_BC = jnp.asarray(code_BC)
        return scan(decoder, params.decoder, decoder.initial_carry(code_BC.shape[0]), repeat(code_BC, steps))[1]

    def reconstruct(params, xs_BTF):
        xs_BTF = jnp.asarray(xs_BTF)
        return decode(params, encode(params, xs_BTF), xs_BTF.shape[1])

    def loss_fn(params, batch, key):
        return losses.mse(reconstruct(params, batch.inputs), batch.targets, batch.mask), {}

    return Autoencoder(encoder, decoder, init, encode, decode, reconstruct,
                       stateless_objective(loss_fn, name="autoencoder"))
