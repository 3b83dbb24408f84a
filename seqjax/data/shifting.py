"""The three many-to-one shifting schemes: features, labels, or both of the previous ``lags`` steps -> label.

For every scheme the target of sample ``n`` is the label of the **current** step ``t = n + lags``, and the
samples cover ``t = lags, ..., T - 1``, so ``N = T - lags``. They differ in what the model sees:

==============================  ===============================================  ==================
scheme                          inputs of sample n (current step t = n + lags)   inputs shape
==============================  ===============================================  ==================
``shift_features``              ``features[t - lags : t + 1]`` (incl. step t)     ``[N, lags + 1, F]``
``shift_labels``                ``labels[t - lags : t]``                          ``[N, lags, L]``
``shift_features_and_labels``   ``[features | labels][t - lags : t]``             ``[N, lags, F + L]``
==============================  ===============================================  ==================

``features`` is ``[T, F]`` (or ``[T]``: ``F = 1``); ``labels`` is ``[T]`` (``L = 1`` inside inputs) or
``[T, L]``; targets have the shape of ``labels[lags:]``: ``[N]`` or ``[N, L]``.
"""

from __future__ import annotations

import numpy as np

from seqjax.data import _checks
from seqjax.data.pairs import Pairs
from seqjax.data.windows import window_view


def _labels(fn: str, labels) -> np.ndarray:
    return _checks.as_ndim(fn, "labels", labels, (1, 2), "[time] or [time, label_width]")


def _check_lags(fn: str, lags, num_steps: int, minimum: int) -> int:
    lags = _checks.check_int(fn, "lags", lags, minimum=minimum)
    if lags >= num_steps:
        raise ValueError(f"seqjax.data.{fn}: lags must be < the number of time steps ({num_steps}) so at least "
                         f"one step has {lags} steps before it; got {lags}")
    return lags


def _features_and_labels(fn: str, features, labels) -> tuple[np.ndarray, np.ndarray]:
    f_TF = _checks.as_series(fn, "features", features)
    labels = _labels(fn, labels)
    _checks.check_same_length(fn, {"features": f_TF, "labels": labels}, "number of time steps")
    return f_TF, labels


def shift_features(features, labels, lags) -> Pairs:
    """(a) The features of the previous ``lags`` steps **and of the current step** -> the current label.

    Sample ``n`` (current step ``t = n + lags``): ``inputs[n] = features[t - lags : t + 1]`` and
    ``targets[n] = labels[t]``. Returns ``Pairs(inputs [N, lags + 1, F], targets [N] or [N, L])`` with
    ``N = T - lags``; ``lags = 0`` is one-to-one. Inputs are a read-only view.

    >>> import numpy as np
    >>> t = np.arange(6)
    >>> features_TF, labels_T = np.stack([100 + t, 200 + t], axis=1), t
    >>> x, y = shift_features(features_TF, labels_T, 2)
    >>> x.shape, y.shape
    ((4, 3, 2), (4,))
    >>> x[0].tolist(), int(y[0])
    ([[100, 200], [101, 201], [102, 202]], 2)
    """
    fn = "shift_features"
    f_TF, labels = _features_and_labels(fn, features, labels)
    lags = _check_lags(fn, lags, len(labels), minimum=0)
    count = len(labels) - lags
    return Pairs(window_view(f_TF, lags + 1, count), labels[lags:])


def shift_labels(labels, lags) -> Pairs:
    """(b) The labels of the previous ``lags`` steps -> the current label (autoregressive on labels).

    Sample ``n`` (current step ``t = n + lags``): ``inputs[n] = labels[t - lags : t]`` and
    ``targets[n] = labels[t]``. Returns ``Pairs(inputs [N, lags, L], targets [N] or [N, L])`` with
    ``N = T - lags`` and ``L = 1`` for 1-D labels. Inputs are a read-only view.

    >>> import numpy as np
    >>> x, y = shift_labels(np.arange(6), 3)
    >>> x.shape, y.shape
    ((3, 3, 1), (3,))
    >>> x[..., 0].tolist(), y.tolist()
    ([[0, 1, 2], [1, 2, 3], [2, 3, 4]], [3, 4, 5])
    """
    fn = "shift_labels"
    labels = _labels(fn, labels)
    lags = _check_lags(fn, lags, len(labels), minimum=1)
    count = len(labels) - lags
    l_TL = labels[:, None] if labels.ndim == 1 else labels
    return Pairs(window_view(l_TL, lags, count), labels[lags:])


def shift_features_and_labels(features, labels, lags) -> Pairs:
    """(c) The features and labels of the previous ``lags`` steps -> the current label.

    The current step's features are not an input (every input step must carry features and a label).
    Sample ``n`` (current step ``t = n + lags``): ``inputs[n] = concat(features, labels)[t - lags : t]`` (the
    features first, then the label columns) and ``targets[n] = labels[t]``. Returns
    ``Pairs(inputs [N, lags, F + L], targets [N] or [N, L])`` with ``N = T - lags``; inputs are a read-only
    view of one ``[T, F + L]`` array in the promoted dtype of features and labels.

    >>> import numpy as np
    >>> t = np.arange(6)
    >>> x, y = shift_features_and_labels(np.stack([100 + t, 200 + t], axis=1), t, 2)
    >>> x.shape, y.shape
    ((4, 2, 3), (4,))
    >>> x[0].tolist(), int(y[0])
    ([[100, 200, 0], [101, 201, 1]], 2)
    """
    fn = "shift_features_and_labels"
    f_TF, labels = _features_and_labels(fn, features, labels)
    lags = _check_lags(fn, lags, len(labels), minimum=1)
    count = len(labels) - lags
    l_TL = labels[:, None] if labels.ndim == 1 else labels
    fl_TC = np.concatenate([f_TF, l_TL], axis=1, dtype=np.result_type(f_TF, l_TL))
    return Pairs(window_view(fl_TC, lags, count), labels[lags:])
