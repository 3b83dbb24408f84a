"""seqjax.data.windows: exact Keras timeseries_dataset_from_array windows, as a read-only view."""

import ast
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqjax.data import windows


def keras_windows(data, length, stride=1, sampling_rate=1, start=0, end=None):
    """Independent reimplementation of Keras's algorithm (keras/src/utils/timeseries_dataset_utils.py)."""
    start_index = start
    end_index = len(data) if end is None else end
    num_seqs = end_index - start_index - (length - 1) * sampling_rate
    out = []
    for pos in range(0, num_seqs, stride):  # positions relative to data[start_index:end_index]
        out.append([data[start_index + pos + j * sampling_rate] for j in range(length)])
    return out


def series_TF(num_steps=23, num_features=3):
    """Feature f at step t is 100 * f + t, so every value names its own step and feature."""
    return np.arange(num_steps)[:, None] + 100 * np.arange(num_features)


def test_hand_computed_default():
    x_TF = series_TF(7, 3)
    w_NLF = windows(x_TF, 4)
    assert w_NLF.shape == (4, 4, 3)
    assert w_NLF[..., 0].tolist() == [[0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5, 6]]
    assert w_NLF[2, 1].tolist() == [3, 103, 203]


def test_hand_computed_stride_sampling_rate_start_end():
    x_TF = series_TF(23, 2)
    # span = (3 - 1) * 3 + 1 = 7; steps 2..17 (end=18): starts 2, 7 ... last start + 6 < 18 -> starts 2, 7.
    # num_seqs = 18 - 2 - 6 = 10 -> starts 2 + range(0, 10, 5) = 2, 7.
    w_NLF = windows(x_TF, 3, stride=5, sampling_rate=3, start=2, end=18)
    assert w_NLF.shape == (2, 3, 2)
    assert w_NLF[..., 0].tolist() == [[2, 5, 8], [7, 10, 13]]
    assert w_NLF[..., 1].tolist() == [[102, 105, 108], [107, 110, 113]]


def test_stride_larger_than_series_gives_first_window():
    assert windows(np.arange(5), 2, stride=9)[..., 0].tolist() == [[0, 1]]


def test_count_formula():
    # N = ceil((end - start - (length - 1) * sampling_rate) / stride)
    for num_steps, length, stride, rate, start in [(23, 4, 3, 2, 1), (40, 5, 7, 3, 0), (11, 1, 1, 5, 10)]:
        n = windows(np.zeros((num_steps, 2)), length, stride=stride, sampling_rate=rate, start=start).shape[0]
        assert n == -(-(num_steps - start - (length - 1) * rate) // stride)


def test_one_dimensional_series_is_one_feature():
    w = windows(np.arange(6.0), 5)
    assert w.shape == (2, 5, 1) and w.dtype == np.float64


def test_window_equal_to_series_and_end_equal_to_length():
    assert windows(np.arange(6), 6).shape == (1, 6, 1)
    np.testing.assert_array_equal(windows(series_TF(9), 3, end=9), windows(series_TF(9), 3))


def test_returns_read_only_view_sharing_memory():
    x_TF = series_TF(13, 3).astype(np.float32)
    w = windows(x_TF, 5, stride=2)
    assert np.shares_memory(w, x_TF)
    assert not w.flags.writeable
    with pytest.raises(ValueError):
        w[0, 0, 0] = 1.0


def test_copy_true_is_contiguous_writeable_copy():
    x_TF = series_TF(13, 3)
    w = windows(x_TF, 5, stride=2, sampling_rate=2, copy=True)
    assert w.flags.c_contiguous and w.flags.writeable and not np.shares_memory(w, x_TF)
    np.testing.assert_array_equal(w, windows(x_TF, 5, stride=2, sampling_rate=2))
    single = windows(x_TF, 13, copy=True)  # one window: still a fresh, writeable array
    assert single.flags.writeable and not np.shares_memory(single, x_TF)


@settings(max_examples=300, deadline=None)
@given(
    num_steps=st.integers(1, 40),
    num_features=st.integers(1, 3),
    length=st.integers(1, 12),
    stride=st.integers(1, 9),
    sampling_rate=st.integers(1, 5),
    start=st.integers(0, 39),
    end_back=st.one_of(st.none(), st.integers(0, 39)),
)
def test_matches_keras_algorithm(num_steps, num_features, length, stride, sampling_rate, start, end_back):
    x_TF = series_TF(num_steps, num_features)
    end = None if end_back is None else num_steps - end_back
    if start >= num_steps or (end is not None and end <= start):
        return
    expected = keras_windows(x_TF, length, stride, sampling_rate, start, end)
    if not expected:  # Keras would yield nothing: the window does not fit
        with pytest.raises(ValueError, match="seqjax.data.windows: a window of length="):
            windows(x_TF, length, stride=stride, sampling_rate=sampling_rate, start=start, end=end)
        return
    got = windows(x_TF, length, stride=stride, sampling_rate=sampling_rate, start=start, end=end)
    assert got.shape == (len(expected), length, num_features)
    np.testing.assert_array_equal(got, np.array(expected))


@pytest.mark.parametrize("name", ["length", "stride", "sampling_rate"])
def test_int_arguments_below_one(name):
    kwargs = {"length": 3, name: 0}
    length = kwargs.pop("length")
    with pytest.raises(ValueError, match=rf"^seqjax\.data\.windows: {name} must be an int >= 1; got 0$"):
        windows(series_TF(), length, **kwargs)


@pytest.mark.parametrize("name,value", [("length", 2.0), ("stride", "2"), ("sampling_rate", True)])
def test_int_arguments_wrong_type(name, value):
    kwargs = {"length": 3, name: value}
    length = kwargs.pop("length")
    with pytest.raises(TypeError, match=rf"seqjax\.data\.windows: {name} must be an int >= 1; got"):
        windows(series_TF(), length, **kwargs)


def test_numpy_integers_accepted():
    assert windows(series_TF(), np.int64(3), stride=np.int32(2)).shape == (11, 3, 3)


def test_wrong_ndim():
    with pytest.raises(ValueError, match=r"seqjax\.data\.windows: series must be \[time\] or \[time, features\]; "
                                         r"got shape \(2, 3, 4\)"):
        windows(np.zeros((2, 3, 4)), 2)
    with pytest.raises(ValueError, match=r"seqjax\.data\.windows: series must be .*got shape \(\)"):
        windows(np.float32(1.0), 1)


def test_window_longer_than_series():
    with pytest.raises(ValueError, match=r"seqjax\.data\.windows: a window of length=4 with sampling_rate=3 "
                                         r"spans 10 steps, longer than the 9 steps of series\[0:9\]"):
        windows(series_TF(9), 4, sampling_rate=3)
    with pytest.raises(ValueError, match=r"series\[5:9\]"):
        windows(series_TF(9), 5, start=5)


def test_start_and_end_out_of_range():
    x_TF = series_TF(9)
    with pytest.raises(ValueError, match=r"seqjax\.data\.windows: start must be an int in \[0, 9\) .*; got 9"):
        windows(x_TF, 1, start=9)
    with pytest.raises(ValueError, match=r"seqjax\.data\.windows: start must be an int >= 0; got -1"):
        windows(x_TF, 1, start=-1)
    with pytest.raises(ValueError, match=r"seqjax\.data\.windows: end must be None or an int in \(2, 9\] .*; got 10"):
        windows(x_TF, 1, start=2, end=10)
    with pytest.raises(ValueError, match=r"seqjax\.data\.windows: end must be None or an int in \(2, 9\].*; got 2"):
        windows(x_TF, 1, start=2, end=2)
    with pytest.raises(TypeError, match=r"seqjax\.data\.windows: end must be an int >= 0; got 4\.0"):
        windows(x_TF, 1, end=4.0)


def test_empty_series():
    with pytest.raises(ValueError, match=r"seqjax\.data\.windows: series must have at least 1 time step; "
                                         r"got shape \(0, 3\)"):
        windows(np.zeros((0, 3)), 1)


def test_data_package_never_imports_jax():
    root = pathlib.Path(__file__).resolve().parents[1] / "seqjax" / "data"
    files = sorted(root.glob("*.py"))
    assert len(files) >= 5
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n == "jax" or n.startswith(("jax.", "jaxlib", "flax", "optax")) for n in names), \
                f"{path.name} imports {names}"
