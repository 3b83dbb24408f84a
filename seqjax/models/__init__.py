"""The seeds' models as short recipes built from the public pieces (cells, scan, rollout, train).

- `one_to_many_repeat`, `one_to_many_feedback`: one vector in, a sequence out (`OneToMany`).
- `autoencoder`: the LSTM autoencoder, trained on `(X, X)` (`Autoencoder`, `AutoencoderParams`).
- `language_model`: Embedding -> GRU -> GRU -> dense -> softmax with masked cross-entropy and sampling.
"""

from seqjax.models.autoencoder import Autoencoder, AutoencoderParams, autoencoder
from seqjax.models.language_model import LanguageModel, language_model
from seqjax.models.one_to_many import OneToMany, one_to_many_feedback, one_to_many_repeat

__all__ = [
    "Autoencoder",
    "AutoencoderParams",
    "LanguageModel",
    "OneToMany",
    "autoencoder",
    "language_model",
    "one_to_many_feedback",
    "one_to_many_repeat",
]
