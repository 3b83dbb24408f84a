"""seqjax.data pairs: next_step_pairs, windows_and_next and the three shifting schemes (a), (b), (c)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqjax.data import (Pairs, next_step_pairs, shift_features, shift_features_and_labels, shift_labels,
                         windows_and_next)

T = 11  # time steps; features F = 2, label width 3 where 2-D: every dimension a different size


def time_coded():
    """features[t] = [100 + t, 200 + t], labels[t] = t: every value names its own step."""
    t = np.arange(T)
    return np.stack([100 + t, 200 + t], axis=1), t


# ----- next_step_pairs -------------------------------------------------------------------------------------


def test_next_step_pairs_batched():
    seq_BTF = np.arange(3)[:, None, None] * 1000 + np.arange(7)[None, :, None] + 100 * np.arange(2)
    x, y = next_step_pairs(seq_BTF)
    assert x.shape == y.shape == (3, 6, 2)
    np.testing.assert_array_equal(y[:, :, :], seq_BTF[:, 1:])
    np.testing.assert_array_equal(x, seq_BTF[:, :-1])
    assert (y - x == 1).all()  # target t is step t + 1


@pytest.mark.parametrize("shape", [(7, 2), (7,)])
def test_next_step_pairs_unbatched_keeps_rank(shape):
    seq = np.arange(7)[:, None] * np.ones(shape[1:] or (1,), int)
    seq = seq.reshape(shape)
    pairs = next_step_pairs(seq)
    assert isinstance(pairs, Pairs)
    assert pairs.inputs.shape == pairs.targets.shape == (6,) + shape[1:]
    assert pairs.inputs.reshape(6, -1)[:, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert pairs.targets.reshape(6, -1)[:, 0].tolist() == [1, 2, 3, 4, 5, 6]


def test_next_step_pairs_errors():
    with pytest.raises(ValueError, match=r"seqjax\.data\.next_step_pairs: seq must have at least 2 time steps "
                                         r"\(axis 1\).*got shape \(4, 1, 3\)"):
        next_step_pairs(np.zeros((4, 1, 3)))
    with pytest.raises(ValueError, match=r"seqjax\.data\.next_step_pairs: seq must be \[batch, time, features\], "
                                         r"\[time, features\] or \[time\]; got shape \(2, 3, 4, 5\)"):
        next_step_pairs(np.zeros((2, 3, 4, 5)))


# ----- windows_and_next ------------------------------------------------------------------------------------


def test_windows_and_next_one_step():
    features, _ = time_coded()
    x, y = windows_and_next(features, 4)
    assert x.shape == (7, 4, 2) and y.shape == (7, 1, 2)
    # the target of window [i, i + 4) is step i + 4, right after the window's last step
    assert x[:, -1, 0].tolist() == [103, 104, 105, 106, 107, 108, 109]
    assert y[:, 0, 0].tolist() == [104, 105, 106, 107, 108, 109, 110]


@settings(max_examples=150, deadline=None)
@given(length=st.integers(1, 6), horizon=st.integers(1, 4), offset=st.integers(0, 3), stride=st.integers(1, 4))
def test_windows_and_next_first_target_index(length, horizon, offset, stride):
    t = np.arange(T)
    if length + offset + horizon > T:
        with pytest.raises(ValueError, match=r"seqjax\.data\.windows_and_next: one sample spans"):
            windows_and_next(t, length, horizon=horizon, offset=offset, stride=stride)
        return
    x, y = windows_and_next(t, length, horizon=horizon, offset=offset, stride=stride)
    n = (T - length - offset - horizon) // stride + 1
    assert x.shape == (n, length, 1) and y.shape == (n, horizon, 1)
    i = np.arange(n) * stride
    np.testing.assert_array_equal(x[:, :, 0], i[:, None] + np.arange(length))
    np.testing.assert_array_equal(y[:, :, 0], (i + length + offset)[:, None] + np.arange(horizon))
    assert y[-1, -1, 0] <= T - 1


def test_windows_and_next_other_targets_and_columns():
    features, labels = time_coded()
    labels_TL = np.stack([labels, -labels, 10 * labels], axis=1)  # [T, 3]
    x, y = windows_and_next(features, 3, horizon=2, targets=labels_TL)
    assert x.shape == (7, 3, 2) and y.shape == (7, 2, 3)
    assert y[0].tolist() == [[3, -3, 30], [4, -4, 40]]
    _, y_col = windows_and_next(features, 3, targets=features[:, [1]])
    assert y_col.shape == (8, 1, 1) and y_col[:, 0, 0].tolist() == list(range(203, 211))
    _, y_1d = windows_and_next(features, 3, targets=labels)
    assert y_1d.shape == (8, 1, 1) and y_1d[0, 0, 0] == 3


def test_windows_and_next_views_are_read_only():
    features, _ = time_coded()
    x, y = windows_and_next(features, 3)
    assert np.shares_memory(x, features) and np.shares_memory(y, features)
    assert not x.flags.writeable and not y.flags.writeable


def test_windows_and_next_errors():
    features, labels = time_coded()
    with pytest.raises(ValueError, match=r"seqjax\.data\.windows_and_next: one sample spans length \+ offset \+ "
                                         r"horizon = 8 \+ 2 \+ 2 = 12 steps, more than the 11 time "
                                         r"steps of series"):
        windows_and_next(features, 8, horizon=2, offset=2)
    with pytest.raises(ValueError, match=r"seqjax\.data\.windows_and_next: series and targets must have the same "
                                         r"number of time steps; got series has 11, targets has 10"):
        windows_and_next(features, 3, targets=labels[:-1])
    with pytest.raises(ValueError, match=r"seqjax\.data\.windows_and_next: horizon must be an int >= 1; got 0"):
        windows_and_next(features, 3, horizon=0)
    with pytest.raises(ValueError, match=r"seqjax\.data\.windows_and_next: offset must be an int >= 0; got -1"):
        windows_and_next(features, 3, offset=-1)
    with pytest.raises(TypeError, match=r"seqjax\.data\.windows_and_next: length must be an int >= 1; got 2\.5"):
        windows_and_next(features, 2.5)
    with pytest.raises(ValueError, match=r"seqjax\.data\.windows_and_next: stride must be an int >= 1; got 0"):
        windows_and_next(features, 3, stride=0)
    with pytest.raises(ValueError, match=r"seqjax\.data\.windows_and_next: targets must be \[time\] or "
                                         r"\[time, features\]; got shape \(11, 1, 1\)"):
        windows_and_next(features, 3, targets=np.zeros((T, 1, 1)))


# ----- the three shifting schemes --------------------------------------------------------------------------


def test_shift_features_includes_current_step():
    features, labels = time_coded()
    x, y = shift_features(features, labels, 3)
    assert x.shape == (8, 4, 2) and y.shape == (8,)
    for n in range(8):
        t = int(y[n])  # the current step
        assert t == n + 3
        assert x[n, :, 0].tolist() == [100 + t - 3, 100 + t - 2, 100 + t - 1, 100 + t]
        assert x[n, :, 1].tolist() == [200 + t - 3, 200 + t - 2, 200 + t - 1, 200 + t]


def test_shift_features_zero_lags_is_one_to_one():
    features, labels = time_coded()
    x, y = shift_features(features, labels, 0)
    assert x.shape == (T, 1, 2)
    np.testing.assert_array_equal(x[:, 0], features)
    np.testing.assert_array_equal(y, labels)


def test_shift_labels_previous_labels_only():
    _, labels = time_coded()
    x, y = shift_labels(labels, 5)
    assert x.shape == (6, 5, 1) and y.shape == (6,)
    for n in range(6):
        t = int(y[n])
        assert t == n + 5
        assert x[n, :, 0].tolist() == list(range(t - 5, t))  # strictly before the current step


def test_shift_labels_two_dimensional_labels():
    _, labels = time_coded()
    labels_TL = np.stack([labels, 50 + labels, 90 + labels], axis=1)
    x, y = shift_labels(labels_TL, 2)
    assert x.shape == (9, 2, 3) and y.shape == (9, 3)
    assert x[0].tolist() == [[0, 50, 90], [1, 51, 91]] and y[0].tolist() == [2, 52, 92]


def test_shift_features_and_labels_previous_steps_only():
    features, labels = time_coded()
    x, y = shift_features_and_labels(features, labels, 4)
    assert x.shape == (7, 4, 3) and y.shape == (7,)
    for n in range(7):
        t = int(y[n])
        assert t == n + 4
        past = np.arange(t - 4, t)
        np.testing.assert_array_equal(x[n], np.stack([100 + past, 200 + past, past], axis=1))


def test_shift_features_and_labels_label_width_and_dtype():
    features, labels = time_coded()
    labels_TL = np.stack([labels, -labels, 7 * labels], axis=1).astype(np.float32)
    x, y = shift_features_and_labels(features.astype(np.float32), labels_TL, 2)
    assert x.shape == (9, 2, 5) and y.shape == (9, 3) and x.dtype == np.float32
    assert x[3].tolist() == [[103, 203, 3, -3, 21], [104, 204, 4, -4, 28]]
    assert y[3].tolist() == [5, -5, 35]
    x_mixed, _ = shift_features_and_labels(features.astype(np.float32), labels, 2)  # int labels promote
    assert x_mixed.dtype == np.result_type(np.float32, labels.dtype)


@pytest.mark.parametrize("fn", [shift_features, shift_features_and_labels])
def test_shift_features_and_labels_different_lengths(fn):
    features, labels = time_coded()
    with pytest.raises(ValueError, match=rf"seqjax\.data\.{fn.__name__}: features and labels must have the same "
                                         r"number of time steps; got features has 11, labels has 10"):
        fn(features, labels[:-1], 2)


@pytest.mark.parametrize("fn,minimum", [(shift_features, 0), (shift_labels, 1), (shift_features_and_labels, 1)])
def test_shift_lags_errors(fn, minimum):
    features, labels = time_coded()
    args = (labels,) if fn is shift_labels else (features, labels)
    name = fn.__name__
    with pytest.raises(ValueError, match=rf"seqjax\.data\.{name}: lags must be an int >= {minimum}; got -1"):
        fn(*args, -1)
    with pytest.raises(ValueError, match=rf"seqjax\.data\.{name}: lags must be < the number of time steps \(11\).*"
                                         r"got 11"):
        fn(*args, T)
    with pytest.raises(TypeError, match=rf"seqjax\.data\.{name}: lags must be an int >= {minimum}; got 1\.5"):
        fn(*args, 1.5)


def test_shift_wrong_ndim():
    features, labels = time_coded()
    with pytest.raises(ValueError, match=r"seqjax\.data\.shift_labels: labels must be \[time\] or "
                                         r"\[time, label_width\]; got shape \(11, 2, 1\)"):
        shift_labels(labels.reshape(T, 1, 1).repeat(2, axis=1), 2)
    with pytest.raises(ValueError, match=r"seqjax\.data\.shift_features: features must be \[time\] or "
                                         r"\[time, features\]; got shape \(1, 11, 2\)"):
        shift_features(features[None], labels, 2)
