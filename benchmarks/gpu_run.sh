#!/usr/bin/env bash
# Everything the speed issue asks of a lent GPU, in one call of about six minutes (the device tool's `run`,
# from the repository root; its image already has jax with CUDA, flax, optax, chex and PyTorch, and nothing
# can be installed there, so seqjax runs from the checkout):
#
#     bash benchmarks/gpu_run.sh                 # results under $OUT, else benchmarks/results/gpu/
#     SEQJAX_GPU_ATTEMPTS=1 bash benchmarks/gpu_run.sh   # also the GPU plan's variants (a few minutes more)
#     SEQJAX_GPU_CONFIG=tiny SEQJAX_GPU_CHECK_CONFIGS=tiny bash benchmarks/gpu_run.sh   # a smoke run, anywhere
#
# Stages, most needed first, each under its own time limit and all under SEQJAX_GPU_BUDGET_S (default 360 s):
#   env      the GPU, the driver and the Python packages
#   check    `benchmarks.gpu_check`: every seqjax path on the GPU against float64 on the CPU, cuDNN's call seen
#   train    `benchmarks.bench --configs "$CONFIG" --tasks train`: the goals (LSTM against PyTorch's cuDNN LSTM,
#            GRU against Flax's scan), the opt-in cuDNN path beside
#   other    the same for forward and rollout
#   mixed    `benchmarks.mixed --configs "$CONFIG"`: bfloat16 matmuls against float32
#   attempts `benchmarks.attempts --config "$CONFIG" --what train` (only with SEQJAX_GPU_ATTEMPTS=1)
# Each stage's output goes to OUT/<stage>.log and its JSON beside it; OUT/stages.txt lists each stage's exit
# status and seconds, and is printed last. A stage that fails or runs out of time does not stop the next.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
BUDGET=${SEQJAX_GPU_BUDGET_S:-360}
CONFIG=${SEQJAX_GPU_CONFIG:-gpu}  # the bench's size: batch 256, T 200, 32 features, H 512
CHECK_CONFIGS=${SEQJAX_GPU_CHECK_CONFIGS:-check,gpu}
START=$SECONDS
export PYTHONUNBUFFERED=1
# JAX and PyTorch share the GPU in one process: JAX takes memory as it needs it instead of 75% up front
export XLA_PYTHON_CLIENT_PREALLOCATE=false
: > "$OUT/stages.txt"

stage() {  # stage NAME LIMIT_S COMMAND...
  local name=$1 limit=$2 left
  shift 2
  left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -lt 20 ]; then
    echo "$name: not run (budget spent)" | tee -a "$OUT/stages.txt"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (at most ${limit} s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 40 "$OUT/$name.log"
  echo "$name: exit $rc, $((SECONDS - t0)) s$([ "$rc" -eq 124 ] && echo ' (time limit)')" | tee -a "$OUT/stages.txt"
}

stage env 30 bash -c "nvidia-smi; $PYTHON -c 'import jax, flax, optax, chex, numpy, torch; \
print(\"jax\", jax.__version__, jax.default_backend(), jax.devices()); print(\"flax\", flax.__version__, \
\"optax\", optax.__version__, \"chex\", chex.__version__, \"numpy\", numpy.__version__); \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version())'"
stage check 100 "$PYTHON" -m benchmarks.gpu_check --configs "$CHECK_CONFIGS" --out "$OUT/gpu_check.json"
stage train 120 "$PYTHON" -m benchmarks.bench --configs "$CONFIG" --tasks train --peers flax,torch --rounds 9 \
  --no-memory --out "$OUT/bench_train.json"
stage other 90 "$PYTHON" -m benchmarks.bench --configs "$CONFIG" --tasks forward,rollout --peers flax,torch --rounds 9 \
  --no-memory --out "$OUT/bench_forward_rollout.json"
stage mixed 60 "$PYTHON" -m benchmarks.mixed --configs "$CONFIG" --tasks train,forward --rounds 7 \
  --out "$OUT/mixed.json"
if [ "${SEQJAX_GPU_ATTEMPTS:-0}" = 1 ]; then
  stage attempts 240 "$PYTHON" -m benchmarks.attempts --config "$CONFIG" --what train --rounds 5 \
    --out "$OUT/attempts_train.json"
fi
echo "== stages ($((SECONDS - START)) s in all)"
cat "$OUT/stages.txt"
