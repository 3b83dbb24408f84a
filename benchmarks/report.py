"""The printed table and the JSON record of a benchmark run."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from typing import NamedTuple

# Goal: seqjax time must be <= fastest peer time / factor (factor 1.25 = "1.25x faster").
GOALS = {("lstm", "train"): 1.25, ("lstm", "forward"): 1.0, ("lstm", "rollout"): 1.5, ("gru", "train"): 1.25}
GOAL_PEERS = {("gru", "train"): ("flax",)}  # the GRU goal is against Flax's GRU scan only
BOUND = "bound"  # benchmarks.bounds: the bare matmul loop, timed alongside but not a peer
CUDNN = "seqjax_cudnn"  # seqjax's opt-in cuDNN LSTM (CUDA only), timed beside its default path
OURS = ("seqjax", CUDNN)  # not peers


class Row(NamedTuple):
    """One (config, cell, task): per-contender timings, how each ran, and the equality check."""

    config: str
    cell: str
    task: str
    timings: dict  # name -> Timing._asdict()
    how: dict  # name -> description
    max_abs_diff: dict  # peer -> {output: diff}
    gflops: float | None  # seqjax forward GFLOP/s (forward rows only)

    def speedup(self, peers=None) -> tuple[str, float] | None:
        """(fastest peer, fastest peer time / seqjax time), over `peers` (default: all measured)."""
        best = self._fastest_peer(peers)
        if best is None or "seqjax" not in self.timings:
            return None
        return best, self.timings[best]["median_ms"] / self.timings["seqjax"]["median_ms"]

    def _fastest_peer(self, peers=None) -> str | None:
        names = [n for n in self.timings if n not in OURS + (BOUND,) and (peers is None or n in peers)]
        return min(names, key=lambda n: self.timings[n]["median_ms"]) if names else None

    def reachable(self, peers=None) -> float | None:
        """Fastest peer time / bound time: the largest speedup a JAX loop can show on this machine."""
        best = self._fastest_peer(peers)
        if best is None or BOUND not in self.timings:
            return None
        return self.timings[best]["median_ms"] / self.timings[BOUND]["median_ms"]

    def goal(self) -> tuple[float, bool] | None:
        factor = GOALS.get((self.cell, self.task))
        if factor is None:
            return None
        best = self.speedup(GOAL_PEERS.get((self.cell, self.task)))
        return None if best is None else (factor, best[1] >= factor)


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"] = names[0] if names else platform.processor()
    except OSError:
        info["cpu"] = platform.processor()
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    from seqjax.fast import plan

    # fresh memory's cost, which moves every contender's train step, depends on huge pages (BENCHMARKS.md)
    info["transparent_hugepage"] = plan.thp_mode()
    info["glibc_tunables"] = os.environ.get("GLIBC_TUNABLES", "")
    info["seqjax_sees_huge_pages"] = plan.huge_pages()
    # which build of the native kernels runs: its vector registers, and any flags added to -march=native
    from seqjax.fast import native

    info["seqjax_native_flags"] = os.environ.get("SEQJAX_NATIVE_FLAGS", "")
    info["seqjax_native_vector_bytes"] = native.vector_bytes() if native.available() else None
    return info


def versions(peers: list[str]) -> dict:
    import flax
    import jax
    import jaxlib
    import optax

    import seqjax

    out = {"seqjax": seqjax.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
           "flax": flax.__version__, "optax": optax.__version__, "jax_backend": jax.default_backend(),
           "jax_devices": [str(d) for d in jax.devices()]}
    if "torch" in peers:
        import torch

        out["torch"] = torch.__version__
        out["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            out["torch_cuda"] = torch.version.cuda
            out["torch_cudnn"] = torch.backends.cudnn.version()
            out["torch_gpu"] = torch.cuda.get_device_name()
    if "keras" in peers:
        import keras

        out["keras"] = keras.__version__
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                           text=True, check=False).stdout.strip()
    except OSError:
        pass
    return out


def _ms(row: Row, name: str) -> str:
    t = row.timings.get(name)
    return "-" if t is None else f"{t['median_ms']:.3g}"


def table(rows: list[Row], names: list[str]) -> str:
    """Markdown table: medians in ms per contender, the best peer's time / seqjax's, and the goal."""
    head = ["config", "cell", "task"] + [f"{n} ms" for n in names] + ["speedup vs best peer", "goal"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        best = r.speedup()
        sp = "-" if best is None else f"{best[1]:.2f}x ({best[0]})"
        g = r.goal()
        if g is not None and GOAL_PEERS.get((r.cell, r.task)):
            vs = r.speedup(GOAL_PEERS[(r.cell, r.task)])
            sp += f"; {vs[1]:.2f}x vs {vs[0]}"
        goal = "-" if g is None else f">= {g[0]:g}x: {'met' if g[1] else 'NOT met'}"
        reach = r.reachable(GOAL_PEERS.get((r.cell, r.task)))
        if g is not None and not g[1] and reach is not None:
            goal += f"; bound {reach:.2f}x"
        if r.gflops is not None:
            goal += f" ({r.gflops:.3g} GFLOP/s)"
        lines.append("| " + " | ".join([r.config, r.cell, r.task] + [_ms(r, n) for n in names] + [sp, goal]) + " |")
    return "\n".join(lines)


def compile_table(rows: list[Row], names: list[str]) -> str:
    head = ["config", "cell", "task"] + [f"{n} first call ms" for n in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r.timings[n]['first_call_ms']:.0f}" if n in r.timings else "-" for n in names]
        lines.append("| " + " | ".join([r.config, r.cell, r.task] + cells) + " |")
    return "\n".join(lines)


def write_json(path: str, payload: dict):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=float)


def save_run(payload: dict, out: str | None, name: str, quick: bool) -> str:
    """Writes a run's JSON to `out`, else to `benchmarks/results/{name}.json` (a quick run: to the temp
    directory, so smoke tests leave the committed results alone); prints and returns the path."""
    path = out or (os.path.join(tempfile.gettempdir(), f"seqjax-{name}-quick.json") if quick else
                   os.path.join(os.path.dirname(__file__), "results", f"{name}.json"))
    write_json(path, payload)
    print(f"\nJSON: {path}  ({payload['seconds']:.0f} s)")
    return path


def memory_table(mem: list[dict]) -> str:
    """Markdown table of the long-sequence train-step memory variants (see `benchmarks.memory`)."""
    head = ["path", "remat", "XLA temporaries MB", "XLA planned peak MB", "process peak RSS MB", "step s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in mem:
        if "error" in m:
            lines.append(f"| {m.get('path', '?')} | {m.get('remat')} | error: {m['error']} | | | |")
            continue
        cells = [m.get("path", "fast path"), str(m.get("remat")), f"{m.get('xla_temp_mb', float('nan')):.3g}",
                 f"{m.get('xla_planned_peak_mb', float('nan')):.3g}",
                 "-" if m.get("peak_rss_mb") is None else f"{m['peak_rss_mb']:.0f}",
                 "-" if m.get("step_s") is None else f"{m['step_s']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goals_summary(rows: list[Row], matmul_peak_gflops: float, fma_peak_gflops: float | None = None) -> str:
    """Markdown list: for each goal, the configs where it is met and where not, with the ratios; a missed
    one also gives fastest peer / bound, the most a JAX loop could reach there. The large forward's GFLOP/s
    is also given as a share of the matmul peak (the goal) and of the FMA peak where it was measured."""
    lines = []
    for (cell, task), factor in GOALS.items():
        peers = GOAL_PEERS.get((cell, task))
        met, missed = [], []
        for r in rows:
            if (r.cell, r.task) != (cell, task) or r.goal() is None:
                continue
            best, ratio = r.speedup(peers)
            text = f"{r.config} {ratio:.2f}x vs {best}"
            ok = r.goal()[1]
            if task == "forward" and r.config == "large" and r.gflops is not None:
                share = r.gflops / matmul_peak_gflops
                text += f", {r.gflops:.0f} GFLOP/s = {share:.0%} of the matmul peak (goal 80%)"
                if fma_peak_gflops:
                    text += f" and {r.gflops / fma_peak_gflops:.0%} of the FMA peak"
                ok = ok and share >= 0.8
            reach = r.reachable(peers)
            if not ok and reach is not None:
                text += f" (the bare matmul loop: {reach:.2f}x)"
            (met if ok else missed).append(text)
        against = "Flax" if peers else "the fastest peer"
        lines.append(f"- {cell.upper()} {task}, at least {factor:g}x {against}: met on "
                     f"{'; '.join(met) or 'none'} — not met on {'; '.join(missed) or 'none'}.")
    return "\n".join(lines)


def markdown(payload: dict) -> str:
    """The BENCHMARKS.md sections of one run's JSON: results, first calls, goals, memory."""
    rows = [Row(**r) for r in payload["rows"]]
    names = [n for n in OURS + ("flax", "keras", "torch") if n == "seqjax" or any(n in r.timings for r in rows)]
    names += [BOUND] if any(BOUND in r.timings for r in rows) else []
    goals = goals_summary(rows, payload["matmul_peak_gflops"], payload.get("fma_peak_gflops"))
    parts = [table(rows, names), compile_table(rows, names), goals]
    if payload.get("memory"):
        parts.append(memory_table(payload["memory"]))
    return "\n\n".join(parts)


if __name__ == "__main__":
    import sys

    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results", "latest.json")
    with open(path) as f:
        print(markdown(json.load(f)))
