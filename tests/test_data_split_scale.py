"""seqjax.data chronological_split / leakage_gap and the StandardScaler / MinMaxScaler pytrees."""

import numpy as np
import pytest

from seqjax.data import (MinMaxScaler, Split, StandardScaler, chronological_split, fit_minmax, fit_standard,
                         leakage_gap, windows_and_next)

# ----- chronological_split ---------------------------------------------------------------------------------


def time_coded(num_steps=200, num_features=3):
    return np.arange(num_steps)[:, None] + 1000 * np.arange(num_features)


def test_split_fractions_counts_and_gap():
    x_TF = time_coded(200)
    parts = chronological_split(x_TF, train=0.6, val=30, test=0.1, gap=5)
    assert isinstance(parts, Split)
    assert parts.bounds.tolist() == [[0, 120], [125, 155], [160, 180]]
    for part, (lo, hi) in zip(parts[:3], parts.bounds):
        np.testing.assert_array_equal(part, x_TF[lo:hi])
        assert np.shares_memory(part, x_TF)
    assert parts.train.shape == (120, 3) and parts.val.shape == (30, 3) and parts.test.shape == (20, 3)


def test_split_test_defaults_to_the_rest_and_zero_means_none():
    parts = chronological_split(np.arange(50), train=30, val=10, gap=2)
    assert parts.test.tolist() == list(range(44, 50))
    no_test = chronological_split(np.arange(50), train=30, val=10, test=0, gap=2)
    assert no_test.test.shape == (0,) and no_test.val.tolist() == list(range(32, 42))
    exact = chronological_split(np.arange(42), train=30, val=10, test=0, gap=2)
    assert exact.test.shape == (0,) and exact.bounds[2, 0] == exact.bounds[2, 1]


def test_split_gap_keeps_last_training_target_before_first_validation_input():
    x_T = np.arange(300)  # value == time index
    length, horizon = 12, 4
    gap = leakage_gap(length, horizon=horizon)
    assert gap == length - 1 + horizon
    parts = chronological_split(x_T, train=0.6, val=0.2, gap=gap)
    # windowing each part on its own
    _, y_train = windows_and_next(parts.train, length, horizon=horizon)
    x_val, _ = windows_and_next(parts.val, length, horizon=horizon)
    assert y_train.max() < x_val.min()
    # cutting samples from the whole series and assigning them by their first step (Keras's start_index)
    x_all, y_all = windows_and_next(x_T, length, horizon=horizon)
    starts = x_all[:, 0, 0]
    train_lo, train_hi = parts.bounds[0]
    val_lo, val_hi = parts.bounds[1]
    last_train_target = y_all[(starts >= train_lo) & (starts < train_hi)].max()
    first_val_input = x_all[(starts >= val_lo) & (starts < val_hi)].min()
    assert last_train_target < first_val_input
    assert last_train_target == first_val_input - 1  # the gap is the smallest that works
    # one step less gap and the last training target is the first validation step
    tight = chronological_split(x_T, train=0.6, val=0.2, gap=gap - 1)
    leaked = y_all[(starts >= tight.bounds[0, 0]) & (starts < tight.bounds[0, 1])].max()
    assert leaked == tight.bounds[1, 0]


def test_split_errors():
    x_TF = time_coded(20)
    with pytest.raises(ValueError, match=r"seqjax\.data\.chronological_split: the parts need 23 steps \(train 10 \+ "
                                         r"gap 2 \+ val 5 \+ gap 2 \+ test 4\) but series has 20"):
        chronological_split(x_TF, train=10, val=5, test=4, gap=2)
    with pytest.raises(ValueError, match=r"seqjax\.data\.chronological_split: no steps left for test: .*pass test=0"):
        chronological_split(x_TF, train=10, val=6, gap=2)
    with pytest.raises(ValueError, match=r"seqjax\.data\.chronological_split: train must be an int number of steps "
                                         r"or a float fraction in \(0, 1\); got 1\.5"):
        chronological_split(x_TF, train=1.5, val=2)
    with pytest.raises(ValueError, match=r"seqjax\.data\.chronological_split: val=0\.01 of 20 steps gives 0 steps"):
        chronological_split(x_TF, train=0.5, val=0.01)
    with pytest.raises(ValueError, match=r"seqjax\.data\.chronological_split: val must be an int >= 1; got 0"):
        chronological_split(x_TF, train=5, val=0)
    with pytest.raises(TypeError, match=r"seqjax\.data\.chronological_split: train must be an int number of steps "
                                        r"or a float fraction in \(0, 1\); got '5'"):
        chronological_split(x_TF, train="5", val=2)
    with pytest.raises(ValueError, match=r"seqjax\.data\.chronological_split: gap must be an int >= 0; got -1"):
        chronological_split(x_TF, train=5, val=2, gap=-1)
    with pytest.raises(ValueError, match=r"seqjax\.data\.chronological_split: series must be \[time\] or "
                                         r"\[time, features\]; got shape \(2, 20, 3\)"):
        chronological_split(x_TF[None].repeat(2, 0), train=5, val=2)


def test_leakage_gap_errors():
    assert leakage_gap(10, horizon=2, offset=3) == 14
    with pytest.raises(ValueError, match=r"seqjax\.data\.leakage_gap: length must be an int >= 1; got 0"):
        leakage_gap(0)


# ----- scalers ---------------------------------------------------------------------------------------------


def data(seed=0, num_steps=57):
    rng = np.random.default_rng(seed)
    x_TF = rng.normal(size=(num_steps, 4)) * [1.0, 10.0, 0.1, 3.0] + [0.0, -5.0, 2.0, 100.0]
    return x_TF.astype(np.float32)


@pytest.mark.parametrize("fit", [fit_standard, fit_minmax])
def test_inverse_of_transform_is_identity(fit):
    x_TF = data()
    scaler = fit(x_TF)
    np.testing.assert_allclose(scaler.inverse(scaler.transform(x_TF)), x_TF, rtol=1e-5, atol=1e-4)
    windows_NLF = x_TF[:50].reshape(5, 10, 4)
    np.testing.assert_allclose(scaler.inverse(scaler.transform(windows_NLF)), windows_NLF, rtol=1e-5, atol=1e-4)


def test_standard_statistics_per_feature():
    x_TF = data().astype(np.float64)
    scaler = fit_standard(x_TF)
    assert isinstance(scaler, StandardScaler) and scaler.mean.shape == scaler.scale.shape == (4,)
    np.testing.assert_allclose(scaler.mean, x_TF.mean(0))
    np.testing.assert_allclose(scaler.scale, x_TF.std(0))
    z = scaler.transform(x_TF)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(0), 1)


def test_minmax_feature_range():
    x_TF = data()
    scaler = fit_minmax(x_TF, feature_range=(-1.0, 2.0))
    assert isinstance(scaler, MinMaxScaler) and scaler.feature_range.tolist() == [-1.0, 2.0]
    z = scaler.transform(x_TF)
    np.testing.assert_allclose(z.min(0), -1.0, atol=1e-6)
    np.testing.assert_allclose(z.max(0), 2.0, atol=1e-6)


@pytest.mark.parametrize("fit", [fit_standard, fit_minmax])
def test_fitted_on_training_part_only(fit):
    x_TF = data(num_steps=90)
    parts = chronological_split(x_TF, train=0.6, val=0.2, gap=3)
    scaler = fit(parts.train)
    changed = x_TF.copy()
    changed[parts.bounds[1, 0]:] *= 1000.0  # change val and test only
    again = fit(chronological_split(changed, train=0.6, val=0.2, gap=3).train)
    for a, b in zip(scaler, again):
        np.testing.assert_array_equal(a, b)


def test_constant_feature_does_not_divide_by_zero():
    x_TF = data()
    x_TF[:, 2] = 0.1  # constant: mean and std are not exact in floating point
    standard = fit_standard(x_TF)
    assert standard.scale[2] == 1.0 and standard.mean[2] == np.float32(0.1)
    z = standard.transform(x_TF)
    assert np.isfinite(z).all() and (z[:, 2] == 0).all()
    np.testing.assert_array_equal(standard.inverse(z)[:, 2], x_TF[:, 2])
    minmax = fit_minmax(x_TF, feature_range=(-1.0, 1.0))
    assert minmax.data_range[2] == 1.0 and (minmax.transform(x_TF)[:, 2] == -1.0).all()


def test_dtypes_and_one_dimensional():
    assert fit_standard(data()).mean.dtype == np.float32
    assert fit_standard(data().astype(np.float64)).mean.dtype == np.float64
    scaler = fit_standard(np.arange(10))
    assert scaler.mean.shape == () and scaler.mean == 4.5
    assert scaler.transform(np.arange(10)).shape == (10,)


@pytest.mark.parametrize("fit", [fit_standard, fit_minmax])
def test_scalers_are_pytrees_usable_under_jit(fit):
    jax = pytest.importorskip("jax")
    x_TF = data()
    scaler = fit(x_TF)
    assert all(isinstance(leaf, np.ndarray) for leaf in scaler)
    leaves, treedef = jax.tree.flatten(scaler)
    assert len(leaves) == len(scaler._fields)
    rebuilt = jax.tree.unflatten(treedef, leaves)
    assert type(rebuilt) is type(scaler)
    z = jax.jit(lambda s, x: s.transform(x))(scaler, x_TF)
    np.testing.assert_allclose(np.asarray(z), scaler.transform(x_TF), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fit", [fit_standard, fit_minmax])
def test_nan_and_inf_in_fitting_data(fit):
    x_TF = data()
    x_TF[7, 2] = np.nan
    with pytest.raises(ValueError, match=rf"seqjax\.data\.{fit.__name__}: train must not contain NaN; got 1 NaN "
                                         r"value\(s\), the first at index \(7, 2\)"):
        fit(x_TF)
    x_TF[7, 2] = np.inf
    with pytest.raises(ValueError, match=rf"seqjax\.data\.{fit.__name__}: train must be finite; got 1 infinite"):
        fit(x_TF)


def test_scaler_errors():
    with pytest.raises(ValueError, match=r"seqjax\.data\.fit_standard: train must be a non-empty .*got shape \(0, 3\)"):
        fit_standard(np.zeros((0, 3)))
    with pytest.raises(TypeError, match=r"seqjax\.data\.fit_standard: train must be a real numeric array"):
        fit_standard(np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"seqjax\.data\.fit_minmax: feature_range must be \(low, high\) with finite "
                                         r"low < high; got \(1\.0, 0\.0\)"):
        fit_minmax(data(), feature_range=(1.0, 0.0))
    with pytest.raises(TypeError, match=r"seqjax\.data\.fit_minmax: feature_range must be a pair of numbers"):
        fit_minmax(data(), feature_range=(0.0, 1.0, 2.0))
    scaler = fit_standard(data())
    with pytest.raises(ValueError, match=r"seqjax\.data\.StandardScaler\.transform: x must be \[\.\.\., 4\] .*"
                                         r"got shape \(5, 3\)"):
        scaler.transform(np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"seqjax\.data\.MinMaxScaler\.inverse: x must be \[\.\.\., 4\]"):
        fit_minmax(data()).inverse(np.zeros(4 * 3))
