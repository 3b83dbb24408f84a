"""The GPU check (`benchmarks.gpu_check`) on CPU: it passes for seqjax's paths, and it fails where it should.

Tiny sizes; the float64 reference runs on the CPU as it does on a GPU machine.
"""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import seqjax as sj
from benchmarks import gpu_check
from seqjax.fast import cudnn

TINY = gpu_check.CHECK_CONFIGS["tiny"]


def test_every_path_is_within_its_tolerance_and_the_json_says_so(tmp_path):
    out = tmp_path / "check.json"
    payload = gpu_check.main(["--configs", "tiny", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert payload["ok"] and all(r["ok"] for r in rows)
    assert [(r["cell"], r["path"]) for r in rows] == [
        ("lstm", "default"), ("lstm", "bf16 matmuls"), ("lstm", "cuDNN layout, reference call (no cuDNN here)"),
        ("gru", "default"), ("gru", "bf16 matmuls")]
    for r in rows:
        errors = r["relative_error"]
        assert set(errors) == set(gpu_check.QUANTITIES)
        if r["path"] == "bf16 matmuls":  # bfloat16's rounding shows, and stays inside its tolerance
            assert all(1e-4 < e < gpu_check.BF16_TOL for e in errors.values()), r
        else:  # float32 against float64
            assert all(0 < e < 1e-5 for e in errors.values()), r
    assert set(payload["plans"]) == {"tiny/lstm", "tiny/gru"}
    assert payload["device_kind"] and payload["versions"]["jax_backend"] == "cpu"


def test_a_layer_with_other_maths_fails_the_check():
    wrong = gpu_check.Path("hard sigmoid", lambda h: sj.lstm(h, recurrent_activation="hard_sigmoid"),
                           gpu_check.FLOAT32_TOL)
    row = gpu_check.check_row(TINY, "lstm", wrong, seed=0)
    assert not row["ok"]
    assert all(e > 1e-3 for e in row["relative_error"].values())


def test_a_cudnn_path_that_did_not_call_cudnn_fails_the_check(monkeypatch):
    """With cuDNN "available" but its call replaced by JAX's reference implementation, the numbers are right
    and the program holds no `cudnn_rnn` call: the row must say so and fail."""
    monkeypatch.setattr(cudnn, "cudnn_available", lambda: True)
    monkeypatch.setattr(cudnn, "cudnn_call", cudnn.reference_call)
    path = gpu_check.paths("lstm")[-1]
    assert path.name == "cuDNN"
    row = gpu_check.check_row(TINY, "lstm", path, seed=2)
    assert all(e < 1e-5 for e in row["relative_error"].values())
    assert row["cudnn_rnn_in_program"] is False and not row["ok"]
    assert "no cudnn_rnn call" in gpu_check.table([row])


def test_relative_error_counts_every_array_and_refuses_non_finite_values_and_other_structures():
    want = {"a": np.ones((2, 3)), "b": np.full(4, 2.0)}
    got = {"a": np.ones((2, 3)), "b": np.array([2.0, 2.0, 2.0, 2.5])}
    assert gpu_check.relative_error(got, want) == pytest.approx(0.5 / np.sqrt(6 + 16))
    got["a"] = got["a"].copy()
    got["a"][1, 2] = np.nan
    assert gpu_check.relative_error(got, want) == float("inf")
    with pytest.raises(ValueError, match=r"gpu_check.relative_error: got a .*the reference is a"):
        gpu_check.relative_error({"a": want["a"]}, want)
    with pytest.raises(ValueError, match=r"got 5 values against the reference's 4"):
        gpu_check.relative_error({"a": jnp.ones(5)}, {"a": jnp.ones(4)})


def test_unknown_config_is_refused(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--configs", "tiny,huge"])
    assert "--configs: unknown ['huge']" in capsys.readouterr().err


def _run_script(tmp_path, **env):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "gpu"
    full_env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "SEQJAX_GPU_CONFIG": "tiny",
                "SEQJAX_GPU_CHECK_CONFIGS": "tiny", **env}
    done = subprocess.run(["bash", os.path.join(root, "benchmarks", "gpu_run.sh")], env=full_env,
                          capture_output=True, text=True, timeout=300)
    return done, out


def test_the_device_script_runs_every_stage_and_writes_their_results(tmp_path):
    """`benchmarks/gpu_run.sh` at the tiny size on CPU: the stages the GPU call runs, each finishing."""
    done, out = _run_script(tmp_path, SEQJAX_GPU_ATTEMPTS="0")
    assert done.returncode == 0, done.stderr
    stages = (out / "stages.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in stages] == ["env", "check", "train", "other", "mixed"]
    assert all(": exit 0," in line for line in stages), stages
    assert json.loads((out / "gpu_check.json").read_text())["ok"]
    train = json.loads((out / "bench_train.json").read_text())["rows"]
    assert {(r["cell"], r["task"]) for r in train} == {("lstm", "train"), ("gru", "train")}
    other = json.loads((out / "bench_forward_rollout.json").read_text())["rows"]
    assert {r["task"] for r in other} == {"forward", "rollout"}
    assert {r["task"] for r in json.loads((out / "mixed.json").read_text())["rows"]} == {"train", "forward"}
    assert done.stdout.rstrip().endswith(stages[-1])  # the stage list is what the call's reply ends with


def test_the_device_script_skips_stages_once_its_budget_is_spent(tmp_path):
    done, out = _run_script(tmp_path, SEQJAX_GPU_BUDGET_S="10")
    assert done.returncode == 0, done.stderr
    stages = (out / "stages.txt").read_text().splitlines()
    assert stages == [f"{name}: not run (budget spent)" for name in ("env", "check", "train", "other", "mixed")]
