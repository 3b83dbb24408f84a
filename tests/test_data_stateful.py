"""seqjax.data stateful arrangement: aligned rows across chunks, remainder handling, inverse, next-step pairs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqjax.data import StatefulBatches, StatefulPairs, stateful_batches, stateful_pairs, unstack_stateful


def long_series(num_steps, num_features=3):
    """Feature f at step t is t + 1000 * f (t is readable from feature 0)."""
    return np.arange(num_steps)[:, None] + 1000 * np.arange(num_features)


def parallel_series(num_series, num_steps, num_features=2):
    """Series s, step t, feature f holds 10_000 * s + t + 1000 * f."""
    return (10_000 * np.arange(num_series)[:, None, None] + np.arange(num_steps)[None, :, None]
            + 1000 * np.arange(num_features))


def rows(xs, i):
    """Row i of every chunk, concatenated in chunk order: [n * C, ...]."""
    return np.concatenate(list(xs[:, i]), axis=0)


# ----- one long series -------------------------------------------------------------------------------------


def test_long_series_drop_rows_are_contiguous_streams():
    x_TF = long_series(101)
    sb = stateful_batches(x_TF, batch_size=4, chunk_length=6)
    assert isinstance(sb, StatefulBatches)
    n = 101 // (4 * 6)  # 4 chunks; each stream 24 steps; the last 101 - 96 = 5 steps dropped
    assert sb.xs.shape == (n, 4, 6, 3) and sb.mask.shape == (n, 4, 6) and sb.reset.shape == (n,)
    assert sb.mask.all() and sb.reset.tolist() == [True, False, False, False]
    for i in range(4):
        np.testing.assert_array_equal(rows(sb.xs, i), x_TF[i * 24:(i + 1) * 24])
    # row i of chunk k continues row i of chunk k - 1
    assert (sb.xs[1:, :, 0, 0] == sb.xs[:-1, :, -1, 0] + 1).all()
    assert sb.xs.flags.c_contiguous


def test_long_series_pad_keeps_every_step_and_marks_exactly_the_padding():
    x_TF = long_series(103)
    sb = stateful_batches(x_TF, batch_size=4, chunk_length=6, remainder="pad")
    # streams like numpy.array_split: 26, 26, 26, 25 steps; ceil(26 / 6) = 5 chunks of 6
    assert sb.xs.shape == (5, 4, 6, 3) and sb.mask.shape == (5, 4, 6)
    lengths = [26, 26, 26, 25]
    starts = np.cumsum([0] + lengths[:-1])
    for i, (start, length) in enumerate(zip(starts, lengths)):
        row_mask = rows(sb.mask, i)
        assert row_mask.tolist() == [True] * length + [False] * (30 - length)
        np.testing.assert_array_equal(rows(sb.xs, i)[:length], x_TF[start:start + length])
        assert (rows(sb.xs, i)[length:] == 0).all()
    assert int(sb.mask.sum()) == 103


@settings(max_examples=120, deadline=None)
@given(num_steps=st.integers(1, 90), batch_size=st.integers(1, 7), chunk_length=st.integers(1, 9),
       remainder=st.sampled_from(["drop", "pad"]))
def test_long_series_inverse_restores_input(num_steps, batch_size, chunk_length, remainder):
    x_TF = long_series(num_steps, 2)
    fits = batch_size <= num_steps and (remainder == "pad" or num_steps >= batch_size * chunk_length)
    if not fits:
        with pytest.raises(ValueError, match=r"seqjax\.data\.stateful_batches: (batch_size|one chunk of)"):
            stateful_batches(x_TF, batch_size, chunk_length, remainder=remainder)
        return
    sb = stateful_batches(x_TF, batch_size, chunk_length, remainder=remainder)
    kept = num_steps if remainder == "pad" else (num_steps // (batch_size * chunk_length)) * batch_size * chunk_length
    back = unstack_stateful(sb.xs, sb.mask)
    np.testing.assert_array_equal(back, x_TF[:kept])
    assert int(sb.mask.sum()) == kept and (sb.xs[~sb.mask] == 0).all()


def test_one_dimensional_series_is_one_feature():
    sb = stateful_batches(np.arange(20.0), batch_size=2, chunk_length=5)
    assert sb.xs.shape == (2, 2, 5, 1) and sb.xs.dtype == np.float64
    assert unstack_stateful(sb.xs, sb.mask).shape == (20, 1)


def test_inverse_of_model_outputs_with_other_trailing_shape():
    sb = stateful_batches(long_series(50), batch_size=3, chunk_length=4, remainder="pad")
    ys = np.stack([sb.xs[..., 0] * 2, sb.xs[..., 0] * 3], axis=-1)[..., None]  # [n, B, C, 2, 1]
    back = unstack_stateful(ys, sb.mask)
    assert back.shape == (50, 2, 1)
    assert back[:, 0, 0].tolist() == [2 * t for t in range(50)]


# ----- parallel series -------------------------------------------------------------------------------------


def test_parallel_series_groups_rows_and_reset():
    x_STF = parallel_series(6, 17)
    sb = stateful_batches(x_STF, batch_size=3, chunk_length=5)
    per_group = 17 // 5  # 3 chunks per group, last 2 steps of every series dropped
    assert sb.xs.shape == (2 * per_group, 3, 5, 2)
    assert sb.reset.tolist() == [True, False, False, True, False, False]
    for g in range(2):
        for i in range(3):
            stream = np.concatenate(list(sb.xs[g * per_group:(g + 1) * per_group, i]), axis=0)
            np.testing.assert_array_equal(stream, x_STF[g * 3 + i, :15])
    np.testing.assert_array_equal(unstack_stateful(sb.xs, sb.mask, num_series=6), x_STF[:, :15])


def test_parallel_series_pad():
    x_STF = parallel_series(4, 13)
    sb = stateful_batches(x_STF, batch_size=4, chunk_length=5, remainder="pad")
    assert sb.xs.shape == (3, 4, 5, 2) and sb.reset.tolist() == [True, False, False]
    assert sb.mask[:2].all() and sb.mask[2, :, :3].all() and not sb.mask[2, :, 3:].any()
    assert (sb.xs[2, :, 3:] == 0).all()
    np.testing.assert_array_equal(unstack_stateful(sb.xs, sb.mask, num_series=4), x_STF)


# ----- next-step pairs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("remainder", ["drop", "pad"])
def test_stateful_pairs_align_across_chunk_boundaries(remainder):
    x_TF = long_series(61)
    sp = stateful_pairs(x_TF, batch_size=3, chunk_length=4, remainder=remainder)
    assert isinstance(sp, StatefulPairs)
    assert sp.xs.shape == sp.ys.shape and sp.mask.shape == sp.xs.shape[:3]
    # every real target is the step after its input
    assert (sp.ys[..., 0][sp.mask] == sp.xs[..., 0][sp.mask] + 1).all()
    # the target of the last step of chunk k is the first input of chunk k + 1, in the same row
    both = sp.mask[:-1, :, -1] & sp.mask[1:, :, 0]
    assert both.any()
    np.testing.assert_array_equal(sp.ys[:-1, :, -1][both], sp.xs[1:, :, 0][both])
    np.testing.assert_array_equal(unstack_stateful(sp.ys, sp.mask), x_TF[1:1 + int(sp.mask.sum())])


def test_stateful_pairs_targets_and_parallel():
    x_STF = parallel_series(2, 9)
    labels_ST1 = x_STF[..., :1] * -1
    sp = stateful_pairs(x_STF, batch_size=2, chunk_length=4, targets=labels_ST1)
    assert sp.xs.shape == (2, 2, 4, 2) and sp.ys.shape == (2, 2, 4, 1)
    np.testing.assert_array_equal(unstack_stateful(sp.xs, sp.mask, num_series=2), x_STF[:, :8])
    np.testing.assert_array_equal(unstack_stateful(sp.ys, sp.mask, num_series=2), labels_ST1[:, 1:9])


# ----- errors ----------------------------------------------------------------------------------------------


def test_errors_long_series():
    with pytest.raises(ValueError, match=r"seqjax\.data\.stateful_batches: batch_size \(the number of streams cut "
                                         r"from one long series\) must be <= its 5 time steps; got 6"):
        stateful_batches(np.arange(5), 6, 1, remainder="pad")
    with pytest.raises(ValueError, match=r"seqjax\.data\.stateful_batches: one chunk of batch_size \* "
                                         r"chunk_length = 4 \* 6 = 24 steps does not fit in the series' 23"):
        stateful_batches(long_series(23), 4, 6)
    with pytest.raises(ValueError, match=r"seqjax\.data\.stateful_batches: remainder must be one of 'drop', "
                                         r"'pad'; got 'trim'"):
        stateful_batches(long_series(23), 2, 3, remainder="trim")
    with pytest.raises(ValueError, match=r"seqjax\.data\.stateful_batches: chunk_length must be an int >= 1; got 0"):
        stateful_batches(long_series(23), 2, 0)
    with pytest.raises(TypeError, match=r"seqjax\.data\.stateful_batches: batch_size must be an int >= 1; got 2\.0"):
        stateful_batches(long_series(23), 2.0, 3)
    with pytest.raises(ValueError, match=r"seqjax\.data\.stateful_batches: series must be \[time\], "
                                         r"\[time, features\] \(one long series\) or \[series, time, features\]; "
                                         r"got shape \(2, 3, 4, 5\)"):
        stateful_batches(np.zeros((2, 3, 4, 5)), 1, 1)


def test_errors_parallel_series():
    with pytest.raises(ValueError, match=r"seqjax\.data\.stateful_batches: batch_size must divide the number of "
                                         r"parallel series .*here 4\).*got 5"):
        stateful_batches(parallel_series(4, 10), 5, 2)
    with pytest.raises(ValueError, match=r"seqjax\.data\.stateful_batches: batch_size must divide .*got 3"):
        stateful_batches(parallel_series(4, 10), 3, 2)
    with pytest.raises(ValueError, match=r"seqjax\.data\.stateful_batches: chunk_length must be <= the 10 time "
                                         r"steps of each series"):
        stateful_batches(parallel_series(4, 10), 2, 11)


def test_errors_pairs():
    with pytest.raises(ValueError, match=r"seqjax\.data\.stateful_pairs: targets must match series in \[time\] = "
                                         r"\(20,\).*got shape \(19, 1\)"):
        stateful_pairs(long_series(20), 2, 3, targets=np.arange(19))
    with pytest.raises(ValueError, match=r"seqjax\.data\.stateful_pairs: series must have at least 2 time steps"):
        stateful_pairs(np.arange(1), 1, 1)


def test_errors_unstack():
    sb = stateful_batches(parallel_series(4, 12), batch_size=2, chunk_length=3)
    with pytest.raises(ValueError, match=r"seqjax\.data\.unstack_stateful: num_series must be a multiple of the "
                                         r"batch size 2 .*got 3"):
        unstack_stateful(sb.xs, sb.mask, num_series=3)
    with pytest.raises(ValueError, match=r"seqjax\.data\.unstack_stateful: chunks must be \[num_chunks, batch, "
                                         r"chunk_length, \.\.\.\]"):
        unstack_stateful(sb.xs[:, :1], sb.mask)
    with pytest.raises(TypeError, match=r"seqjax\.data\.unstack_stateful: mask must be a bool array"):
        unstack_stateful(sb.xs, sb.mask.astype(int))
    ragged = stateful_batches(long_series(11), batch_size=2, chunk_length=3, remainder="pad")
    with pytest.raises(ValueError, match=r"seqjax\.data\.unstack_stateful: mask must mark the same number"):
        unstack_stateful(ragged.xs, ragged.mask, num_series=2)
