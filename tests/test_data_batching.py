"""seqjax.data.batches: fixed shapes, each row once per epoch, seeded shuffling, padding mask, errors."""

import numpy as np
import pytest

from seqjax.data import Batch, batches, stateful_batches, stateful_pairs

N, L, F = 23, 5, 3  # rows, steps, features: every dimension a different size


def aligned():
    """x row r is filled with r; y row r is -r: a batch shows which rows it holds and that they stay aligned."""
    x_NLF = np.broadcast_to(np.arange(N, dtype=np.float32)[:, None, None], (N, L, F)).copy()
    return x_NLF, -np.arange(N)


def test_drop_fixed_shapes_in_order():
    x, y = aligned()
    out = list(batches(x, y, batch_size=4))
    assert len(out) == N // 4
    for b, batch in enumerate(out):
        assert isinstance(batch, Batch)
        (xb, yb), mask = batch
        assert xb.shape == (4, L, F) and xb.dtype == np.float32 and yb.shape == (4,)
        assert mask.dtype == np.bool_ and mask.shape == (4,) and mask.all()
        assert yb.tolist() == [-r for r in range(4 * b, 4 * b + 4)]
        assert (xb[:, 0, 0] == -yb).all()


def test_pad_mask_marks_exactly_the_padding():
    x, y = aligned()
    out = list(batches(x, y, batch_size=6, remainder="pad"))
    assert len(out) == -(-N // 6) == 4
    assert all(b.arrays[0].shape == (6, L, F) and b.arrays[1].shape == (6,) for b in out)
    last = out[-1]
    assert last.mask.tolist() == [True] * 5 + [False]
    assert last.arrays[1].tolist() == [-18, -19, -20, -21, -22, 0]
    assert (last.arrays[0][5] == 0).all()
    assert sum(int(b.mask.sum()) for b in out) == N


@pytest.mark.parametrize("remainder", ["drop", "pad"])
def test_every_row_exactly_once_per_epoch_when_shuffled(remainder):
    x, y = aligned()
    rng = np.random.default_rng(3)
    for _ in range(3):
        seen = []
        for (xb, yb), mask in batches(x, y, batch_size=5, shuffle=True, rng=rng, remainder=remainder):
            assert xb.shape == (5, L, F)
            assert (xb[mask][:, 0, 0] == -yb[mask]).all()  # rows stay aligned across arrays
            seen += (-yb[mask]).tolist()
        expected = N if remainder == "pad" else (N // 5) * 5
        assert len(seen) == len(set(seen)) == expected
        if remainder == "pad":
            assert sorted(seen) == list(range(N))


def order(**kwargs):
    _, y = aligned()
    return [(-b.arrays[0]).tolist() for b in batches(y, batch_size=N, shuffle=True, **kwargs)][0]


def test_shuffle_reproducible_with_seed_and_different_across_epochs():
    assert order(rng=7) == order(rng=7)  # an int seed: the same order every call
    assert order(rng=7) != list(range(N))
    a, b = np.random.default_rng(11), np.random.default_rng(11)
    epochs_a = [order(rng=a) for _ in range(3)]
    epochs_b = [order(rng=b) for _ in range(3)]
    assert epochs_a == epochs_b  # the same seeded Generator -> the same sequence of epochs
    assert epochs_a[0] != epochs_a[1] != epochs_a[2]  # reusing the Generator: a new order every epoch


def test_permutation_is_drawn_when_called():
    _, y = aligned()
    rng = np.random.default_rng(5)
    first = batches(y, batch_size=N, shuffle=True, rng=rng)
    second = batches(y, batch_size=N, shuffle=True, rng=rng)
    expected = np.random.default_rng(5)
    assert next(first).arrays[0].tolist() == y[expected.permutation(N)].tolist()
    assert next(second).arrays[0].tolist() == y[expected.permutation(N)].tolist()


def test_unshuffled_ignores_rng_and_single_array():
    _, y = aligned()
    out = list(batches(y, batch_size=N, rng=3))
    assert len(out) == 1 and out[0].arrays[0].tolist() == y.tolist() and len(out[0].arrays) == 1


def test_errors():
    x, y = aligned()
    with pytest.raises(ValueError, match=r"seqjax\.data\.batches: array 0 and array 1 must have the same number of "
                                         r"rows \(axis 0\); got array 0 has 23, array 1 has 22"):
        batches(x, y[:-1], batch_size=4)
    with pytest.raises(ValueError, match=r"seqjax\.data\.batches: batch_size must be <= the 23 rows to make one "
                                         r"full batch \(or use remainder='pad'\); got 24"):
        batches(x, y, batch_size=24)
    with pytest.raises(ValueError, match=r"seqjax\.data\.batches: batch_size must be an int >= 1; got 0"):
        batches(x, batch_size=0)
    with pytest.raises(TypeError, match=r"seqjax\.data\.batches: batch_size must be an int >= 1; got 4\.0"):
        batches(x, batch_size=4.0)
    with pytest.raises(ValueError, match=r"seqjax\.data\.batches: remainder must be one of 'drop', 'pad'; got "
                                         r"'keep'"):
        batches(x, batch_size=4, remainder="keep")
    with pytest.raises(ValueError, match=r"seqjax\.data\.batches: shuffle=True needs rng"):
        batches(x, batch_size=4, shuffle=True)
    with pytest.raises(TypeError, match=r"seqjax\.data\.batches: rng must be a numpy\.random\.Generator or an int "
                                        r"seed >= 0; got RandomState"):
        batches(x, batch_size=4, shuffle=True, rng=np.random.RandomState(0))
    with pytest.raises(ValueError, match=r"seqjax\.data\.batches: rng must be an int >= 0; got -1"):
        batches(x, batch_size=4, shuffle=True, rng=-1)
    with pytest.raises(TypeError, match=r"seqjax\.data\.batches: shuffle must be a bool; got 'yes'"):
        batches(x, batch_size=4, shuffle="yes")
    with pytest.raises(TypeError, match=r"seqjax\.data\.batches: expected at least one array"):
        batches(batch_size=4)
    with pytest.raises(ValueError, match=r"seqjax\.data\.batches: array 1 must have a leading row axis"):
        batches(x, np.float32(1.0), batch_size=4)
    with pytest.raises(ValueError, match=r"seqjax\.data\.batches: arrays must have at least one row; got 0"):
        batches(np.zeros((0, 2)), batch_size=1, remainder="pad")


def test_stateful_chunks_are_refused():
    sb = stateful_batches(np.arange(40.0), batch_size=2, chunk_length=5)
    with pytest.raises(TypeError, match=r"seqjax\.data\.batches: array 0 is a StatefulBatches; stateful chunks "
                                        r"must not be reshuffled"):
        batches(sb, batch_size=1, shuffle=True, rng=0)
    sp = stateful_pairs(np.arange(40.0), batch_size=2, chunk_length=5)
    with pytest.raises(TypeError, match=r"seqjax\.data\.batches: array 0 is a StatefulPairs"):
        batches(sp, batch_size=1)
