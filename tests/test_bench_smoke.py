"""Smoke test of the benchmark: every peer runs the same work as seqjax (checked equal), JSON is written.

Tiny sizes only; the timings themselves are never asserted (speed is measured by the benchmark).
"""

import json
import os

import numpy as np
import pytest

from benchmarks import bench, memory, problems, profile, report, seqjax_tasks, timing
from seqjax.fast import native

TINY = problems.QUICK_CONFIGS["tiny"]


def test_quick_run_checks_every_task_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    payload = bench.main(["--quick", "--peers", "flax", "--rounds", "1", "--out", str(out), "--no-memory"])
    rows = json.loads(out.read_text())["rows"]
    assert {(r["cell"], r["task"]) for r in rows} == {(c, t) for c in problems.CELLS for t in problems.TASKS}
    for r in rows:
        assert set(r["timings"]) == {"seqjax", "flax", "bound"}
        assert r["timings"]["seqjax"]["median_ms"] > 0 and r["timings"]["flax"]["first_call_ms"] > 0
        assert all(d < 1e-3 for d in r["max_abs_diff"]["flax"].values())
    assert payload["versions"]["jax_backend"] == "cpu"
    assert payload["matmul_peak_gflops"] > 0
    assert (payload["fma_peak_gflops"] is None) == (native.compiler() is None)
    machine = json.loads(out.read_text())["machine"]  # which build of the native kernels ran
    assert machine["seqjax_native_flags"] == os.environ.get("SEQJAX_NATIVE_FLAGS", "")
    assert machine["seqjax_native_vector_bytes"] == (native.vector_bytes() if native.available() else None)


def test_cudnn_contender_is_checked_timed_and_never_a_peer(tmp_path, monkeypatch):
    """On a CUDA GPU the LSTM forward and train rows add seqjax's cuDNN path; here its call is JAX's
    reference implementation of cuDNN's LSTM, so the wiring runs on CPU."""
    from seqjax.fast import cudnn

    monkeypatch.setattr(cudnn, "cudnn_available", lambda: True)
    monkeypatch.setattr(cudnn, "cudnn_call", cudnn.reference_call)
    out = tmp_path / "bench.json"
    bench.main(["--quick", "--peers", "flax", "--cells", "lstm", "--rounds", "1", "--out", str(out), "--no-memory"])
    rows = {r["task"]: report.Row(**r) for r in json.loads(out.read_text())["rows"]}
    for task in ("forward", "train"):
        assert set(rows[task].timings) == {"seqjax", "seqjax_cudnn", "flax", "bound"}
        assert all(d < 1e-4 for d in rows[task].max_abs_diff["seqjax_cudnn"].values())
        assert rows[task].speedup()[0] == "flax"
    assert "seqjax_cudnn" not in rows["rollout"].timings
    assert "| seqjax_cudnn ms |" in report.markdown(json.loads(out.read_text()))


def test_mixed_precision_benchmark_checks_bf16_matmuls_against_float32(tmp_path):
    from benchmarks import mixed

    out = tmp_path / "mixed.json"
    mixed.main(["--configs", "tiny", "--rounds", "1", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert {(r["cell"], r["task"]) for r in rows} == {(c, t) for c in problems.CELLS for t in mixed.TASKS}
    for r in rows:
        assert r["float32_ms"] > 0 and r["bf16_ms"] > 0
        # checked within bfloat16's precision, and not float32's numbers: the bf16 layer did run
        assert 0 < max(r["max_abs_diff"].values()) < 0.1


@pytest.mark.parametrize("peer", ["torch", "keras"])
def test_optional_peers_compute_what_seqjax_computes(peer):
    import importlib

    module = importlib.import_module(f"benchmarks.peers_{peer}")
    if not module.available():
        pytest.skip(f"{peer} is an optional peer (pip install -e '.[peers]')")
    for cell in problems.CELLS:
        problem = problems.make_problem(TINY, cell, seed=4)
        for task in problems.TASKS:
            ours, theirs = seqjax_tasks.BUILDERS[task](problem), module.BUILDERS[task](problem)
            timing.compare({"seqjax": ours.result(), peer: theirs.result()}, "seqjax")


def test_compare_refuses_different_outputs():
    same = {"seqjax": {"y": np.ones(3)}, "flax": {"y": np.ones(3) + 1e-7}}
    assert timing.compare(same, "seqjax")["flax"]["y"] < 1e-6
    with pytest.raises(AssertionError, match="flax 'y' differs from seqjax"):
        timing.compare({"seqjax": {"y": np.ones(3)}, "flax": {"y": np.array([1.0, 1.0, 1.1])}}, "seqjax")
    with pytest.raises(AssertionError, match="flax gives no 'g'"):
        timing.compare({"seqjax": {"g": np.ones(2)}, "flax": {}}, "seqjax")


def test_goals_compare_with_the_fastest_peer_and_gru_with_flax_only():
    def row(cell, task, **ms):
        return report.Row("c", cell, task, {n: {"median_ms": v} for n, v in ms.items()}, {}, {}, None)

    r = row("lstm", "train", seqjax=4.0, flax=10.0, torch=6.0)
    assert r.speedup() == ("torch", 1.5) and r.goal() == (1.25, True)
    assert row("lstm", "train", seqjax=5.0, torch=6.0).goal() == (1.25, False)
    assert row("gru", "train", seqjax=4.0, flax=5.0, torch=1.0).goal() == (1.25, True)
    assert row("gru", "forward", seqjax=1.0, flax=1.0).goal() is None
    assert "NOT met" in report.table([row("lstm", "rollout", seqjax=2.0, flax=2.5)], ["seqjax", "flax"])


def test_bound_is_timed_but_never_the_fastest_peer():
    r = report.Row("c", "lstm", "rollout", {"seqjax": {"median_ms": 2.0}, "flax": {"median_ms": 3.0},
                                            "bound": {"median_ms": 1.5}}, {}, {}, None)
    assert r.speedup() == ("flax", 1.5) and r.reachable() == 2.0
    assert "NOT met; bound 1.67x" in report.table([r._replace(timings={**r.timings, "flax": {"median_ms": 2.5}})],
                                                  ["seqjax", "flax", "bound"])
    assert "(the bare matmul loop: 1.67x)" in report.goals_summary(
        [r._replace(config="medium", timings={**r.timings, "flax": {"median_ms": 2.5}})], 100.0)


def _matmul_loop_np(problem, xs_TBF, h):
    """NumPy float64 reference of the bound's forward loop: `h = ([x_t, h] @ [w_x; w_h])[:, :H]`."""
    w_xh = np.concatenate([problem.layer["w_x"], problem.layer["w_h"]], axis=0).astype(np.float64)
    for x_t in xs_TBF:
        h = (np.concatenate([x_t, h], axis=-1) @ w_xh)[:, :problem.config.hidden]
    return h


@pytest.mark.parametrize("cell, fused", [(c, True) for c in problems.CELLS] + [("lstm", False)])
def test_bounds_compute_the_recurrent_matmuls(cell, fused, monkeypatch):
    """The same numbers whether the bound's step is one `[x_t, h]` matmul or two (as seqjax's plan)."""
    from benchmarks import bounds

    monkeypatch.setattr(bounds, "fuse_xh", lambda *args: fused)
    problem = problems.make_problem(TINY, cell)  # B 4, T 12, F 3, H 8
    b, f, h = TINY.batch, TINY.features, TINY.hidden
    h0 = np.zeros((b, h))
    want = _matmul_loop_np(problem, np.swapaxes(problem.xs, 0, 1), h0)
    np.testing.assert_allclose(np.asarray(bounds.forward(problem).run()), want, rtol=1e-4, atol=1e-6)
    short = problems.make_problem(TINY, cell, closed_loop=3)  # 200 contracting steps would end near zero
    context_then_zeros = np.concatenate([np.swapaxes(short.context, 0, 1), np.zeros((3, b, f))], axis=0)
    want = _matmul_loop_np(short, context_then_zeros, h0)
    assert np.abs(want).max() > 1e-3  # a loop that stays zero would compare equal to anything zero
    np.testing.assert_allclose(np.asarray(bounds.rollout(short).run()), want, rtol=1e-4, atol=1e-6)
    dh, w_grad = timing.wait(bounds.train(problem).run())
    blocks = problem.layer["w_h"].shape[1] // h
    want = _matmul_loop_np(problem, np.swapaxes(problem.xs, 0, 1), h0)
    for _ in range(TINY.time):
        want = np.tile(want, (1, blocks)) @ problem.layer["w_h"].T.astype(np.float64)
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(np.asarray(dh), want, rtol=1e-4, atol=1e-6)
    assert w_grad.shape == (f + h, blocks * h)


def test_memory_variant_reports_a_smaller_plan_with_remat():
    plain = memory.run_variant(2, 120, 2, 8, None, execute=False)
    chunked = memory.run_variant(2, 120, 2, 8, 12, execute=False)
    assert chunked["xla_temp_mb"] < 0.5 * plain["xla_temp_mb"]


def test_profile_sums_leaf_operations_by_how_often_they_run():
    """Loops, executors and Python frames are not counted; a step's operations are told from a chunk's."""
    steps, calls = 4, 2

    def event(name, dur):
        return {"ph": "X", "name": name, "dur": dur}

    events = [event("ThunkExecutor::Execute", 10_000), event("while.3", 9_000), event("$api.py:1 f", 1e6),
              event("end: dot.1", 5), {"ph": "i", "name": "dot.1"}]
    events += [event("ynn_fusion.1", 300)] * (steps * calls) + [event("add_fusion", 100)] * (2 * steps * calls)
    events += [event("dot_general.2", 1000)] * (2 * calls) + [event("copy.4", 2000)] * calls
    leaves = profile.leaf_times(events, calls)
    assert set(leaves) == {"ynn_fusion.1", "add_fusion", "dot_general.2", "copy.4"}
    assert leaves["add_fusion"] == pytest.approx((0.8, 8))  # ms per call, runs per call
    assert profile.group(leaves, steps) == pytest.approx({
        ("per step", "matmul"): 1.2, ("per step", "other"): 0.8, ("per chunk", "matmul"): 2.0,
        ("once", "other"): 2.0})
    assert profile.steps_of(problems.CONFIGS["large"], "train") == 200
    assert profile.steps_of(problems.CONFIGS["large"], "rollout") == 100  # gcd of warm-up and closed loop


def test_adam_step_is_one_adam_update_of_the_given_loss():
    import jax.numpy as jnp
    import optax

    def loss(p, x):
        return jnp.sum((p - x) ** 2)

    p, x = jnp.array([1.0, -2.0, 3.0]), jnp.array([0.5, 0.5, 4.0])
    new_p, opt_state, value = problems.adam_step(loss, optax.adam(0.1))(p, optax.adam(0.1).init(p), x)
    assert float(value) == pytest.approx(float(loss(p, x)))
    # Adam's first update moves every coordinate by the learning rate against its gradient's sign
    np.testing.assert_allclose(new_p, p - 0.1 * np.sign(p - x), rtol=1e-5)
    assert int(opt_state[0].count) == 1


def test_attempt_variants_compute_what_the_kept_path_computes():
    import jax
    import jax.numpy as jnp

    import seqjax as sj
    from benchmarks import attempts

    problem = problems.make_problem(TINY, "lstm", seed=5)
    for group in (attempts.overlap_variants, attempts.gru_forward_variants):
        (first, ref), *others = group(problem).items()
        for name, fn in others:
            np.testing.assert_allclose(np.asarray(fn()), np.asarray(ref()), rtol=1e-4, atol=1e-5, err_msg=name)
    def grads(c, params, xs):
        return jax.grad(lambda p: jnp.sum(jnp.sin(sj.scan(c, p, c.initial_carry(TINY.batch), xs)[1])))(params)

    def assert_same_grads(kept, variant, cell_problem, label):
        params = {k: jnp.asarray(v) for k, v in cell_problem.layer.items()}
        xs = jnp.asarray(cell_problem.xs)
        want, got = grads(kept, params, xs), grads(variant, params, xs)
        assert set(got) == set(want) == set(params)
        for k, v in want.items():
            np.testing.assert_allclose(np.asarray(got[k]), np.asarray(v), rtol=1e-4, atol=1e-6, err_msg=f"{label} {k}")

    # the per-gate backward steps (LSTM, GRU: not kept) give the kept backward's gradients
    assert_same_grads(sj.lstm(TINY.hidden), attempts._with_backward("lstm", TINY.hidden, attempts._per_gate_backward),
                      problem, "lstm")
    with attempts._plan(attempts.Plan(chunk=4)):  # tiny GRUs run the reference loop unless told otherwise
        assert_same_grads(sj.gru(TINY.hidden),
                          attempts._with_backward("gru", TINY.hidden, attempts._gru_per_gate_backward),
                          problems.make_problem(TINY, "gru", seed=5), "gru")


def test_lanes_attempt_computes_the_lstm_forward_with_the_batch_in_uneven_lanes():
    import jax.numpy as jnp

    import seqjax as sj
    from benchmarks import attempts

    config = problems.Config("lanes", 13, 6, 3, 8)  # 12 lanes of 13 rows: one lane of two, eleven of one
    problem = problems.make_problem(config, "lstm", seed=2)
    variants = attempts.lanes_variants(problem, counts=(1, 2, 12, 20))
    assert [n for n in variants if n.startswith("forward")] == ["forward, 1 lane", "forward, 2 lanes",
                                                                   "forward, 12 lanes"]
    cell = sj.lstm(config.hidden)._replace(sequence=None)  # the reference loop over `step`
    params = {k: jnp.asarray(v) for k, v in problem.layer.items()}
    xs = jnp.asarray(problem.xs)
    want = np.asarray(sj.scan(cell, params, cell.initial_carry(config.batch), xs)[1])
    no_input = sj.scan(cell, params, cell.initial_carry(config.batch), jnp.zeros_like(xs))[0].h
    for name, fn in variants.items():
        expected = want if name.startswith("forward") else np.asarray(no_input)
        np.testing.assert_allclose(np.asarray(fn()), expected, rtol=1e-5, atol=1e-6, err_msg=name)


def test_chunk_head_and_blas_attempts_check_each_variant_against_its_own_first():
    from benchmarks import attempts

    # `main` checks every variant against the first of its cell (chunks of ~√T; the head in the loop) or
    # matmul (XLA's) first
    results = attempts.main(["--config", "tiny", "--what", "chunks,head,blas", "--rounds", "1"])
    chunks, head, blas = results["chunks"], results["head"], results["blas"]
    for cell in ("LSTM", "GRU"):
        names = [n for n in head if n.startswith(cell + ",")]
        assert [n.split(", ")[1] for n in names] == ["head in the loop", "layer by layer", "reference loop"]
        assert attempts._reference("head", names[-1], next(iter(head)), head) == names[0]
    for cell in ("LSTM", "GRU"):
        names = [n for n in chunks if n.startswith(cell + ",")]
        assert len(names) == 4 and sum("chunks of 1 " in n for n in names) == 2, names
        assert attempts._reference("chunks", names[-1], next(iter(chunks)), chunks) == names[0]
    for part, shape in (("forward", "[4, 11] @ [11, 32]"), ("backward", "[4, 32] @ [32, 8]")):
        names = [n for n in blas if n.startswith(f"{part} {shape},")]
        assert len(names) >= 2 and names[0].endswith("XLA (lax.scan)"), names
        assert attempts._reference("blas", names[-1], next(iter(blas)), blas) == names[0]


def test_stacked_closed_loop_attempts_check_the_kernel_the_loop_and_flax_alike_and_write_json(tmp_path):
    from benchmarks import attempts

    # `main` checks the loop over `step` and Flax's closed loop against the kernel of the same stack first
    out = tmp_path / "stack.json"
    results = attempts.main(["--config", "tiny", "--what", "stack_closed_loop", "--rounds", "1", "--out", str(out)])
    names = list(results["stack_closed_loop"])
    assert [n.split(", ")[0] for n in names[::3]] == ["LSTM x2", "LSTM x3", "GRU x2", "GRU x3"]
    assert all(attempts._reference("stack_closed_loop", n, names[0], names) == names[i - i % 3]
               for i, n in enumerate(names))
    report = json.loads(out.read_text())
    assert list(report["results"]["stack_closed_loop"]) == names and report["config"]["name"] == "tiny"
    assert report["command"].endswith(f"--out {out}") and "jax" in report["versions"]


def test_devices_attempts_split_the_batch_over_cpu_devices_and_compute_the_same():
    import os
    import subprocess
    import sys

    from benchmarks import attempts

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with pytest.raises(ValueError, match=r"2\+ CPU devices"):  # this process has one CPU device
        attempts.devices_variants(problems.make_problem(TINY, "lstm"))
    # a fresh process with two: `main` checks every split variant against its one-device twin, then times
    run = subprocess.run([sys.executable, "-m", "benchmarks.attempts", "--config", "tiny", "--what",
                          "devices_loop,devices", "--steps", "3", "--rounds", "1"], capture_output=True, text=True,
                         timeout=600,
                         cwd=root, env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": root})
    assert run.returncode == 0, run.stderr[-2000:]
    for cell in ("LSTM", "GRU"):
        assert f"devices_loop (tiny, {cell}): 3 steps done, waiting for each" in run.stdout
        for task in ("forward", "train step"):
            assert f"{cell} {task}, batch over 2 CPU devices" in run.stdout


def test_the_strassen_attempt_times_both_products_in_the_rollout_and_in_the_kernel_alone():
    from benchmarks import attempts

    # B 64, H 96: four chunks of two 8-row pairs, so the kernels can take Strassen's product when told to
    problem = problems.make_problem(problems.Config("strassen", 64, 6, 3, 96), "lstm", warmup=5, closed_loop=9)
    variants = attempts.strassen_variants(problem)
    outputs = {name: np.asarray(fn()) for name, fn in variants.items()}
    for group in ("rollout", "closed-loop kernel alone"):
        names = [n for n in variants if n.startswith(group + ",")]
        assert len(names) == 4 and all(outputs[n].shape == (64, 9, 3) for n in names), names
        assert attempts._reference("strassen", names[-1], next(iter(variants)), variants) == names[0]
        on, off = ([n for n in names if ("Strassen" in n) == flag] for flag in (True, False))
        np.testing.assert_array_equal(outputs[on[0]], outputs[on[1]])  # identical contenders, the same bits
        np.testing.assert_allclose(outputs[on[0]], outputs[off[0]], atol=1e-5, rtol=1e-5)
        assert not np.array_equal(outputs[on[0]], outputs[off[0]])  # the plan's field reached the kernel
