"""Smoke tests of the experiments: each runs in-process with `--quick`, writing into a tmp_path.

Each checks that the run wrote metrics.json, config.json and the PNGs it names, that every metric is
finite, and that it beats its trivial baseline where the quick settings can (the defaults are larger);
one experiment is rerun to check that a rerun gives the same metrics. Plus unit checks of the shared
helpers and of the main job's data and baselines against independent references.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import (autoencoder, char_lm, common, forecast, online, one_to_many, rain, stateful_vs_windows,
                         tanks)

EXPERIMENTS = {"tanks": tanks, "one_to_many": one_to_many, "stateful_vs_windows": stateful_vs_windows,
               "forecast": forecast, "autoencoder": autoencoder, "rain": rain, "char_lm": char_lm,
               "online": online}


def run_quick(name, tmp_path, *extra):
    metrics = EXPERIMENTS[name].main(["--quick", "--out", str(tmp_path), *extra])
    folder = tmp_path / name
    written = json.loads((folder / "metrics.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    assert config["experiment"] == name and config["quick"] is True and config["seed"] == 0
    assert config["figures"], f"{name} wrote no figure"
    for figure in config["figures"]:
        png = folder / figure
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000, figure
    assert common.all_finite(metrics), f"{name}: non-finite metrics {metrics}"
    assert written == json.loads(json.dumps(common.json_safe(metrics)))  # what was returned is what was written
    return metrics


def test_forecast_quick(tmp_path):
    m = run_quick("forecast", tmp_path)
    methods = m["methods"]
    assert set(methods) == {"seqjax", "persistence", "seasonal_naive", "linear_ar"}
    assert all(set(v) == {"mae", "rmse", "mase"} for v in methods.values())
    assert methods["seqjax"]["mase"] < methods["persistence"]["mase"]
    assert methods["seqjax"]["mase"] < methods["seasonal_naive"]["mase"]
    for v in methods.values():  # MASE is MAE over one in-sample scale, shared by every method
        assert v["mase"] / v["mae"] == pytest.approx(methods["persistence"]["mase"] / methods["persistence"]["mae"],
                                                     rel=1e-4)
        assert v["rmse"] >= v["mae"] * (1 - 1e-6)
    members = m["members"]  # quick: an ensemble of two
    assert members["seeds"] == [0, 1] and all(len(members[k]) == 2 for k in ("mae", "rmse", "mase"))
    assert members["mae"][0] != members["mae"][1]  # two networks, not one twice
    # the forecast is the members' mean: pointwise |mean - truth| <= mean |member - truth|
    assert methods["seqjax"]["mae"] <= np.mean(members["mae"]) * (1 + 1e-6)


def test_forecast_ensemble_seeds_and_size(capsys):
    assert forecast.member_seeds(0, 10) == list(range(10))
    assert forecast.member_seeds(3, 4) == [12, 13, 14, 15]  # --seed values never share a member
    with pytest.raises(SystemExit):
        forecast.main(["--quick", "--ensemble", "0"])
    assert "--ensemble must be at least 1; got 0" in capsys.readouterr().err




def test_tanks_quick(tmp_path):
    m = run_quick("tanks", tmp_path)
    assert m["shapes"]["data"] == [64, 24, 2]
    assert m["shapes"]["many_to_many_inputs"] == [64, 23, 2] and m["shapes"]["many_to_one_outputs"] == [64, 1]
    assert m["many_to_one"]["accuracy"] > m["many_to_one"]["majority_accuracy"]


def test_one_to_many_quick(tmp_path):
    m = run_quick("one_to_many", tmp_path)["methods"]
    for name in ("repeat_vector", "output_feedback"):
        assert m[name]["mse"] < m["constant_baseline"]["mse"]


def test_stateful_vs_windows_quick(tmp_path):
    m = run_quick("stateful_vs_windows", tmp_path)
    for kind in ("windows", "stateful"):
        r = m["lengths"]["L8"][kind]
        assert r["onestep_rmse"] < m["mean_predictor_rmse"]
    # overlapping windows process every step L times per epoch; aligned chunks about once
    assert m["lengths"]["L8"]["windows"]["steps_per_epoch"] > 7 * m["lengths"]["L8"]["stateful"]["steps_per_epoch"]


def test_autoencoder_quick(tmp_path):
    m = run_quick("autoencoder", tmp_path)["methods"]
    assert m["autoencoder"]["reconstruction_mse_normal"] < m["mean_baseline"]["reconstruction_mse_normal"]
    for r in m.values():
        assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 and 0 <= r["auc"] <= 1


def test_rain_quick(tmp_path):
    m = run_quick("rain", tmp_path)["methods"]
    assert set(m) == {"a_features", "b_labels", "c_features_labels", "majority", "persistence"}
    assert m["a_features"]["accuracy"] > m["majority"]["accuracy"]


def test_char_lm_quick(tmp_path):
    m = run_quick("char_lm", tmp_path)
    assert m["perplexity"] < m["vocab"]  # better than a uniform guess over the characters
    assert m["baselines"]["bigram"] < m["baselines"]["unigram"] < m["vocab"]
    assert all(s.startswith(char_lm.PROMPT) and len(s) == len(char_lm.PROMPT) + 40 for s in m["samples"].values())
    assert (tmp_path / "char_lm" / "samples.txt").is_file()


@pytest.fixture(scope="module")
def online_quick(tmp_path_factory):
    return run_quick("online", tmp_path_factory.mktemp("online"))


def test_online_quick(online_quick):
    assert online_quick["updates"] == 500
    assert online_quick["rmse_ratio_last_500"] < 1.0  # beats persistence after 500 online updates


def test_rerun_gives_the_same_metrics(online_quick, tmp_path):
    assert online.main(["--quick", "--out", str(tmp_path)]) == online_quick


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_help_documents_flags(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        EXPERIMENTS[name].main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--quick", "--seed", "--out"))
    assert f"python -m experiments.{name}" in text


# ---- helpers and the main job's baselines, against independent references


def test_parse_quick_defaults_and_explicit_flags():
    p = common.parser("doc")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    default, quick = {"epochs": 100, "hidden": 32}, {"epochs": 3}
    assert vars(common.parse(p, [], default=default, quick=quick))["epochs"] == 100
    args = common.parse(p, ["--quick"], default=default, quick=quick)
    assert (args.epochs, args.hidden) == (3, 32)  # a name without a quick value keeps its default
    assert common.parse(p, ["--quick", "--epochs", "7"], default=default, quick=quick).epochs == 7
    with pytest.raises(ValueError, match="quick names"):
        common.parse(p, [], default={"epochs": 1}, quick={"hidden": 2})


def test_help_appends_fixed_defaults_only():
    p = common.parser("doc")
    p.add_argument("--lr", type=float, default=0.003, help="learning rate")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 100; quick 3)")
    p.add_argument("--batch", type=int, default=None, help="batch size")
    text = " ".join(p.format_help().split())
    assert "learning rate (default 0.003)" in text
    assert "epochs (default 100; quick 3) " in text and "batch size (default" not in text


def test_json_safe_and_table():
    value = {"a": np.float32(1.5), "b": np.arange(3), "c": float("nan"), "d": (np.int64(2), True)}
    assert common.json_safe(value) == {"a": 1.5, "b": [0, 1, 2], "c": None, "d": [2, True]}
    assert common.all_finite({"x": [1.0, np.float32(2)], "y": {"z": 3}})
    assert not common.all_finite({"x": [1.0, float("inf")]})
    lines = common.table([("seqjax", 0.123456), ("persistence", 12345678.0)], ("method", "MASE")).splitlines()
    assert lines[0].split() == ["method", "MASE"] and lines[2].split() == ["seqjax", "0.1235"]
    assert lines[3].split() == ["persistence", "1.235e+07"]


def test_co2_monthly_series():
    time, co2 = forecast.load_co2_monthly()
    assert len(co2) == 526 and np.isfinite(co2).all()
    assert time[0] == pytest.approx(1958 + 2.5 / 12) and time[-1] == pytest.approx(2001 + 11.5 / 12)
    assert 310 < co2.min() < 320 and 370 < co2.max() < 380
    raw = np.genfromtxt(common.dataset("mauna_loa_co2/co2.csv"), delimiter=",", skip_header=1)
    march_1958 = raw[(raw[:, 0] // 100 == 195803), 1]
    assert co2[0] == pytest.approx(np.nanmean(march_1958))


def test_naive_baselines_and_mase_scale():
    known = np.array([1.0, 5.0, 2.0, 3.0, 7.0, 4.0])
    np.testing.assert_array_equal(forecast.persistence(known, 3), [4.0, 4.0, 4.0])
    np.testing.assert_array_equal(forecast.seasonal_naive(known, 5, period=3), [3.0, 7.0, 4.0, 3.0, 7.0])
    # MASE: MAE divided by the in-sample mean |y_t - y_(t-12)|, by hand for a short series
    rng = np.random.default_rng(3)
    history = rng.normal(size=30)
    pred, truth = rng.normal(size=5), rng.normal(size=5)
    scale = np.mean(np.abs(history[12:] - history[:-12]))
    got = forecast.scores(pred, truth, history)
    assert got["mase"] == pytest.approx(np.mean(np.abs(pred - truth)) / scale, rel=1e-5)
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean((pred - truth) ** 2)), rel=1e-5)


def test_linear_ar_recovers_an_ar2_process():
    rng = np.random.default_rng(0)
    y = np.zeros(3000)
    for t in range(2, len(y)):
        y[t] = 0.5 + 1.2 * y[t - 1] - 0.5 * y[t - 2] + 0.01 * rng.standard_normal()
    coef, order = forecast.fit_linear_ar(y, max_order=6)
    assert order >= 2
    np.testing.assert_allclose(coef[:3], [0.5, 1.2, -0.5], atol=0.05)
    # iterating the exact AR(2) without noise from the last two values, by hand
    exact = [y[-2], y[-1]]
    for _ in range(4):
        exact.append(0.5 + 1.2 * exact[-1] - 0.5 * exact[-2])
    np.testing.assert_allclose(forecast.linear_ar(y, 4, coef), exact[2:], atol=0.02)
