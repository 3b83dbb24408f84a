"""The gate-activation blocks timed beside the kernels' (`benchmarks.activations`): each variant computes what it
claims, against float64 NumPy, and the command reports every one."""

import json

import numpy as np
import pytest

from benchmarks import activations
from seqjax.fast import native

needs_compiler = pytest.mark.skipif(native.compiler() is None, reason="no C++ compiler: the blocks are not built")


def _available(variant: int) -> bool:
    lib = activations._library()
    return lib is not None and bool(lib.seqjax_act_available(variant))


@pytest.mark.parametrize("pieces, degree", [(16, 6), (32, 5)])
def test_fitted_pieces_give_tanh_in_float64(pieces, degree):
    table = activations.fit_pieces(pieces, degree)
    assert table.shape == (degree + 1, pieces) and table.dtype == np.float32
    assert table[0, 0] == 0  # the first piece has no constant: tanh(x) ~ x near 0
    x = np.concatenate([np.linspace(0.0, 8.0, 100_001, endpoint=False), np.geomspace(1e-12, 1e-3, 50)])
    s = x * pieces / 8.0
    i, t = s.astype(int), s - np.floor(s)
    y = np.zeros_like(x)
    for k in range(degree, -1, -1):  # Horner, in float64
        y = y * t + table[k, i].astype(np.float64)
    assert np.abs(y - np.tanh(x)).max() < 1.5e-7
    small = (x > 0) & (x < 1e-3)
    assert np.abs(y[small] / np.tanh(x[small]) - 1).max() < 1e-6  # relative, near 0


@needs_compiler
def test_the_kernels_activations_match_float64_and_the_folded_sigmoid_has_their_bits():
    # variant 1 changes the sigmoid only (its tanh is the kernels'); past |x| 15.8 its folded clamp takes over
    wide = np.linspace(-40.0, 40.0, 4096, dtype=np.float32)
    x = np.concatenate([activations._inputs(), wide])
    np.testing.assert_array_equal(activations.evaluate(1, x, True), activations.evaluate(0, x, True))
    kernels = activations.errors(0)
    assert kernels["tanh_max_abs"] < 5e-7 and kernels["sigmoid_max_abs"] < 3e-7 and kernels["nan_stays"]


@needs_compiler
@pytest.mark.parametrize("variant", [2, 4, 5])
def test_the_variants_without_a_division_are_as_accurate_as_the_kernels(variant):
    if not _available(variant):
        pytest.skip("AVX-512 instructions: not in this build")
    got = activations.errors(variant)
    assert got["tanh_max_abs"] < 5e-7 and got["sigmoid_max_abs"] < 3e-7 and got["nan_stays"]
    x = np.array([-20.0, -8.5, -3.0, -1e-20, 0.0, 1e-20, 0.25, 0.5, 2.999, 3.0, 7.99, 8.0, 9.0, 20.0] + [0.0] * 2,
                 np.float32)
    np.testing.assert_allclose(activations.evaluate(variant, x, False), np.tanh(x.astype(np.float64)),
                               rtol=3e-7, atol=3e-7)


@needs_compiler
def test_the_error_check_catches_wrong_values():
    got = activations.errors(3)  # no division: p * q in place of p / q
    assert got["tanh_max_abs"] > 0.1 and got["sigmoid_max_abs"] > 0.1


@needs_compiler
def test_main_times_every_available_variant_and_writes_json(tmp_path, capsys):
    out = tmp_path / "act.json"
    payload = activations.main(["--rounds", "2", "--blocks", "2000", "--out", str(out)])
    lib = activations._library()
    assert [r["variant"] for r in payload["results"]] == [v for v in range(lib.seqjax_act_variants()) if _available(v)]
    assert payload["results"][0]["time_ratio"] == 1.0
    assert payload["vector_bytes"] in (16, 32, 64)
    assert all(r["ns_per_row_and_group"] > 0 for r in payload["results"])
    assert json.loads(out.read_text())["results"] == payload["results"]
    text = capsys.readouterr().out
    assert "| the kernels' (XLA's rational" in text and "sigmoid's halvings folded" in text


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="activations: --rounds and --blocks must be positive, got 0 and 5"):
        activations.main(["--rounds", "0", "--blocks", "5"])
    if native.compiler() is not None:
        with pytest.raises(ValueError, match=r"evaluate: x must be 1-D with a length that is a multiple of 16, got "
                                             r"shape \(17,\)"):
            activations.evaluate(0, np.zeros(17, np.float32), False)
        with pytest.raises(ValueError, match="evaluate: variant 9 is not available in this build"):
            activations.evaluate(9, np.zeros(16, np.float32), False)
