"""Peak memory of one long-sequence train step with and without `remat` (checkpointed chunks of time).

    python -m benchmarks.memory --time 10000 --hidden 256 --remat 100   # one variant, prints JSON

`bench` runs each variant in a fresh process and reports XLA's planned peak (arguments + outputs +
temporaries of the compiled step), and the process's resident memory before compiling and its peak
after two steps (`VmHWM`; it includes JAX's own ~300 MB).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _status_mb(field: str) -> float | None:
    """`VmHWM` (peak) or `VmRSS` (now) of this process from /proc, in MB; None where there is no /proc.

    Unlike `ru_maxrss`, these restart at `exec`, so a child started by a big parent reports its own peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_variant(batch: int, time_steps: int, features: int, hidden: int, remat, execute: bool = True,
                reference: bool = False) -> dict:
    """Compile (and with `execute`, run) one Adam train step of `chain(lstm, dense)` over `time_steps`.

    `reference`: the LSTM without its fast path (JAX's own scan VJP), for comparison."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import seqjax as sj
    from benchmarks.seqjax_tasks import train_step_fn

    lstm = sj.lstm(hidden)._replace(sequence=None) if reference else sj.lstm(hidden)
    model = sj.chain(lstm, sj.dense(features))
    params = model.init(jax.random.key(0), features)
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.standard_normal((batch, time_steps, features), np.float32))
    targets = jnp.asarray(rng.standard_normal((batch, time_steps, features), np.float32))
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)
    step = train_step_fn(model, optimizer, remat=remat)
    rss_before = _status_mb("VmRSS")
    start = time.perf_counter()
    compiled = step.lower(params, opt_state, xs, targets).compile()
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    out = {"batch": batch, "time": time_steps, "features": features, "hidden": hidden, "remat": remat,
           "path": "reference loop" if reference else "fast path", "compile_s": compile_s}
    if mem is not None:
        planned = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes \
            - mem.alias_size_in_bytes
        out.update(xla_temp_mb=mem.temp_size_in_bytes / 2**20, xla_planned_peak_mb=planned / 2**20)
    if execute:
        jax.block_until_ready(compiled(params, opt_state, xs, targets))
        start = time.perf_counter()
        _, _, loss = jax.block_until_ready(compiled(params, opt_state, xs, targets))
        peak = _status_mb("VmHWM")
        out.update(step_s=time.perf_counter() - start, loss=float(loss), rss_before_mb=rss_before,
                   peak_rss_mb=peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def in_subprocess(batch: int, time_steps: int, features: int, hidden: int, remat, execute: bool = True,
                  reference: bool = False) -> dict:
    """`run_variant` in a fresh Python, so its peak resident memory is its own."""
    cmd = [sys.executable, "-m", "benchmarks.memory", "--batch", str(batch), "--time", str(time_steps),
           "--features", str(features), "--hidden", str(hidden)]
    if remat is not None:
        cmd += ["--remat", str(remat)]
    if not execute:
        cmd.append("--compile-only")
    if reference:
        cmd.append("--reference")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"remat": remat, "error": done.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--time", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--remat", type=int, default=None, help="steps per checkpointed chunk (default: off)")
    parser.add_argument("--compile-only", action="store_true", help="report XLA's plan without running")
    parser.add_argument("--reference", action="store_true", help="the LSTM without its fast path")
    args = parser.parse_args(argv)
    print(json.dumps(run_variant(args.batch, args.time, args.features, args.hidden, args.remat,
                                 not args.compile_only, args.reference)))


if __name__ == "__main__":
    main()
