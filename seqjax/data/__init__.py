"""seqjax.data: NumPy arrays in, NumPy arrays out — windows, aligned pairs, stateful chunks, splits, scalers.

Every function states the shapes it returns and which step each target is, so the alignments that are
easy to get wrong with Keras are explicit:

* ``windows``: the windows of Keras's ``timeseries_dataset_from_array``, as one ``[N, length, F]`` view.
* ``next_step_pairs``, ``windows_and_next``: inputs and the steps that follow them.
* ``shift_features``, ``shift_labels``, ``shift_features_and_labels``: many-to-one schemes -> current label.
* ``stateful_batches``, ``stateful_pairs``, ``unstack_stateful``: chunks whose rows continue across chunks.
* ``chronological_split``, ``leakage_gap``: train / val / test in time order with a gap.
* ``fit_standard``, ``fit_minmax``: per-feature scalers fitted on the training part (NamedTuple pytrees).
* ``batches``: fixed-shape (optionally shuffled, padded with a mask) minibatches.

This subpackage imports NumPy only, never JAX.
"""

from seqjax.data.batching import Batch, batches
from seqjax.data.pairs import Pairs, next_step_pairs, windows_and_next
from seqjax.data.scaling import MinMaxScaler, StandardScaler, fit_minmax, fit_standard
from seqjax.data.shifting import shift_features, shift_features_and_labels, shift_labels
from seqjax.data.split import Split, chronological_split, leakage_gap
from seqjax.data.stateful import StatefulBatches, StatefulPairs, stateful_batches, stateful_pairs, unstack_stateful
from seqjax.data.windows import windows

__all__ = [
    "Batch",
    "MinMaxScaler",
    "Pairs",
    "Split",
    "StandardScaler",
    "StatefulBatches",
    "StatefulPairs",
    "batches",
    "chronological_split",
    "fit_minmax",
    "fit_standard",
    "leakage_gap",
    "next_step_pairs",
    "shift_features",
    "shift_features_and_labels",
    "shift_labels",
    "stateful_batches",
    "stateful_pairs",
    "unstack_stateful",
    "windows",
    "windows_and_next",
]
