"""Losses and forecast metrics against float64 NumPy references written from their definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqjax as sj
from seqjax import losses

B, T, F, C = 3, 5, 4, 6  # batch, time, features, classes: all different


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(B, T, F)).astype(np.float32)
    target = rng.normal(size=(B, T, F)).astype(np.float32)
    return pred, target


def masks():
    rng = np.random.default_rng(1)
    return {
        "rows": rng.random(B) > 0.4,
        "steps": rng.random((B, T)) > 0.4,
        "elements": rng.random((B, T, F)) > 0.4,
    }


def ref_masked_mean(err, mask):
    """sum over valid entries / number of valid entries, the mask broadcast over trailing axes."""
    err = np.asarray(err, np.float64)
    if mask is None:
        return err.mean()
    full = np.broadcast_to(mask.reshape(mask.shape + (1,) * (err.ndim - mask.ndim)), err.shape)
    return err[full].sum() / max(full.sum(), 1)


ELEMENTWISE = {
    "mse": (losses.mse, lambda p, t: (p - t) ** 2),
    "mae": (losses.mae, lambda p, t: np.abs(p - t)),
    "bce": (losses.binary_crossentropy,
            lambda x, z: -z * np.log(1 / (1 + np.exp(-x))) - (1 - z) * np.log(1 - 1 / (1 + np.exp(-x)))),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
@pytest.mark.parametrize("mask_kind", [None, "rows", "steps", "elements"])
def test_elementwise_losses_match_numpy(data, name, mask_kind):
    fn, ref = ELEMENTWISE[name]
    pred, target = data
    if name == "bce":
        target = (target > 0).astype(np.float32) * 0.8 + 0.1  # soft labels in [0, 1]
    mask = None if mask_kind is None else masks()[mask_kind]
    expected = ref_masked_mean(ref(pred.astype(np.float64), target.astype(np.float64)), mask)
    np.testing.assert_allclose(fn(pred, target, mask), expected, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(jax.jit(fn)(pred, target, mask), expected, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("mask_kind", [None, "rows", "steps", "elements"])
def test_rmse_is_root_of_masked_mse(data, mask_kind):
    pred, target = data
    mask = None if mask_kind is None else masks()[mask_kind]
    expected = np.sqrt(ref_masked_mean((pred.astype(np.float64) - target) ** 2, mask))
    np.testing.assert_allclose(losses.rmse(pred, target, mask), expected, rtol=2e-6)


def test_bce_is_stable_for_large_logits():
    logits = np.array([[-200.0, -30.0, 0.0, 30.0, 200.0]] * 2, np.float32)
    target = np.array([[1.0, 0.0, 0.5, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0, 1.0]], np.float32)
    x, z = logits.astype(np.float64), target.astype(np.float64)
    ref = np.mean(np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x))))
    out = losses.binary_crossentropy(logits, target)
    assert np.isfinite(out)
    np.testing.assert_allclose(out, ref, rtol=1e-6)


@pytest.mark.parametrize("mask_kind", [None, "rows", "steps"])
def test_sparse_categorical_crossentropy_matches_numpy(mask_kind):
    rng = np.random.default_rng(2)
    logits = (3 * rng.normal(size=(B, T, C))).astype(np.float32)
    labels = rng.integers(0, C, size=(B, T))
    mask = None if mask_kind is None else masks()[mask_kind]
    x = logits.astype(np.float64)
    log_p = x - x.max(-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_p, labels[..., None], -1)[..., 0]
    np.testing.assert_allclose(losses.sparse_categorical_crossentropy(logits, labels, mask),
                               ref_masked_mean(nll, mask), rtol=2e-6)


def test_masked_padding_does_not_reach_loss_or_gradient(data):
    pred, target = data
    mask = masks()["steps"]
    bad_target = np.where(mask[..., None], target, np.nan).astype(np.float32)
    for fn in (losses.mse, losses.mae, losses.binary_crossentropy, losses.smape):
        value, grad = jax.jit(jax.value_and_grad(fn))(jnp.asarray(pred), bad_target, mask)
        assert np.isfinite(value)
        assert np.all(np.isfinite(grad))
        assert np.all(np.asarray(grad)[~mask] == 0)  # padded steps get no gradient
    # padding ids (-1) at masked steps of a language model batch
    logits = np.random.default_rng(3).normal(size=(B, T, C)).astype(np.float32)
    labels = np.where(mask, np.arange(B * T).reshape(B, T) % C, -1)
    value, grad = jax.jit(jax.value_and_grad(losses.sparse_categorical_crossentropy))(jnp.asarray(logits), labels,
                                                                                      mask)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert np.all(np.asarray(grad)[~mask] == 0)


def test_unmasked_label_out_of_range_gives_nan_not_a_clamped_class():
    logits = np.zeros((2, 3, C), np.float32)
    labels = np.array([[0, 1, 2], [3, 4, C]])  # C is out of range
    assert np.isnan(losses.sparse_categorical_crossentropy(logits, labels))


def test_all_masked_gives_zero_not_nan(data):
    pred, target = data
    none = np.zeros((B, T), bool)
    for fn in (losses.mse, losses.mae, losses.rmse, losses.binary_crossentropy, losses.smape):
        value, grad = jax.jit(jax.value_and_grad(fn))(jnp.asarray(pred), target, none)
        assert value == 0.0
        assert np.all(np.asarray(grad) == 0)
    labels = np.zeros((B, T), np.int32)
    assert losses.sparse_categorical_crossentropy(np.ones((B, T, C), np.float32), labels, none) == 0.0


def test_smape_matches_definition_including_zero_terms():
    target = np.array([[1.0, -2.0, 0.0, 4.0], [0.5, 0.0, 3.0, -1.0], [2.0, 2.0, 0.0, 1.0]], np.float32)
    pred = np.array([[1.5, -1.0, 0.0, 3.0], [0.0, 0.0, 3.0, 1.0], [1.0, 4.0, 2.0, 1.0]], np.float32)
    y, f = target.astype(np.float64), pred.astype(np.float64)
    denom = np.abs(y) + np.abs(f)
    terms = np.where(denom > 0, 200 * np.abs(y - f) / np.where(denom > 0, denom, 1), 0.0)
    np.testing.assert_allclose(losses.smape(pred, target), terms.mean(), rtol=1e-6)
    np.testing.assert_allclose(losses.smape(target, target), 0.0)
    assert losses.smape(-target - 1.0, target + 1.0) <= 200.0
    mask = np.array([True, False, True])
    np.testing.assert_allclose(losses.smape(pred, target, mask), terms[mask].mean(), rtol=1e-6)


def ref_mase(pred, target, insample, m):
    """Per-series MASE (time on axis 1 of [B, H, F]) averaged over series, in float64."""
    pred, target, insample = (np.asarray(a, np.float64) for a in (pred, target, insample))
    scale = np.abs(insample[:, m:] - insample[:, :-m]).mean(axis=1)  # [B, F]
    return (np.abs(target - pred).mean(axis=1) / scale).mean()


@pytest.mark.parametrize("m", [1, 3])
def test_mase_matches_per_series_definition(m):
    rng = np.random.default_rng(4)
    n, H = 11, 4
    insample = rng.normal(size=(B, n, 2)).astype(np.float32)
    target = rng.normal(size=(B, H, 2)).astype(np.float32)
    pred = target + rng.normal(size=(B, H, 2)).astype(np.float32)
    np.testing.assert_allclose(losses.mase(pred, target, insample, m=m), ref_mase(pred, target, insample, m),
                               rtol=1e-5)
    # 2-D [H, F] and 1-D [H]: time is axis 0
    np.testing.assert_allclose(losses.mase(pred[0], target[0], insample[0], m=m),
                               ref_mase(pred[:1], target[:1], insample[:1], m), rtol=1e-5)
    np.testing.assert_allclose(losses.mase(pred[0, :, 1], target[0, :, 1], insample[0, :, 1], m=m),
                               ref_mase(pred[:1, :, 1:], target[:1, :, 1:], insample[:1, :, 1:], m), rtol=1e-5)


def test_mase_of_in_sample_seasonal_naive_forecast_is_one():
    y = np.random.default_rng(5).normal(size=(B, 13, 2)).astype(np.float32)
    m = 4
    np.testing.assert_allclose(losses.mase(y[:, :-m], y[:, m:], y, m=m), 1.0, rtol=1e-5)


def test_metrics_and_losses_reject_bad_shapes_and_dtypes(data):
    pred, target = data
    with pytest.raises(ValueError, match=r"seqjax.losses.mse: target must have the shape of pred \(3, 5, 4\); got "
                                         r"\(3, 5\)"):
        losses.mse(pred, target[..., 0])
    with pytest.raises(ValueError, match=r"mask must have a leading part of the element shape \(3, 5, 4\).*got "
                                         r"\(5,\)"):
        losses.mae(pred, target, np.ones(T, bool))
    with pytest.raises(TypeError, match="mask must be bool"):
        losses.mse(pred, target, np.ones((B, T), np.float32))
    with pytest.raises(TypeError, match="labels must be integer class ids; got dtype float32"):
        losses.sparse_categorical_crossentropy(pred, target[..., 0])
    with pytest.raises(ValueError, match=r"logits must be \[\*labels.shape, classes\] = \[3, 4, C\]"):
        losses.sparse_categorical_crossentropy(pred, np.zeros((B, F), np.int32))
    with pytest.raises(ValueError, match=r"insample must be \[3, n, 4\]"):
        losses.mase(pred, target, np.zeros((B, 9, 2), np.float32))
    with pytest.raises(ValueError, match="more than m=5 steps"):
        losses.mase(pred, target, np.zeros((B, 5, F), np.float32), m=5)
    with pytest.raises(ValueError, match="m \\(the seasonal period\\) must be an int >= 1; got 0"):
        losses.mase(pred, target, np.zeros((B, 9, F), np.float32), m=0)


def test_last_step_scores_each_samples_last_valid_output():
    rng = np.random.default_rng(6)
    model = sj.chain(sj.gru(7), sj.dense(2))
    params = model.init(jax.random.key(0), 3)
    xs = rng.normal(size=(4, 6, 3)).astype(np.float32)
    lengths = np.array([6, 3, 1, 0])
    mask = np.arange(6)[None, :] < lengths[:, None]  # right padding; sample 3 is all padding
    target = rng.normal(size=(4, 2)).astype(np.float32)
    _, ys = jax.jit(lambda p: sj.scan(model, p, model.initial_carry(4), xs, mask=mask))(params)
    last_valid = np.stack([np.asarray(ys)[b, max(n - 1, 0)] for b, n in enumerate(lengths)])
    expected = np.mean(((last_valid[:3] - target[:3]).astype(np.float64) ** 2))  # sample 3 does not count
    np.testing.assert_allclose(losses.last_step(losses.mse)(ys, target, mask), expected, rtol=1e-6)
    with pytest.raises(ValueError, match=r"last_step: pred must be per-step outputs \[batch, time, ...\]"):
        losses.last_step(losses.mse)(np.zeros(4, np.float32), target)
