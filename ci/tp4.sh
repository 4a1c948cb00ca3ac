#!/usr/bin/env bash
# The 70B's shape on every GPU of a 4-GPU node, with CUDA graphs: what docs/results/*-<gpu>x4.json hold.
#   1. graph capture at TP 2 (bf16 and fp8 side by side) on a small Llama shape  python -m lab run graph-capture
#   2. this notebook under nbmake, LLM_PROFILE=rehearsal (bf16 at 32768, TP 4)    python -m lab run notebook
#   3. the planner against vLLM at TP 4, eager (the compiled case is step 2's)     python -m lab run capacity
#   4. Ray Serve LLM against plain vLLM at TP 4, 1 to 256 clients                 python -m lab run bench
# Expects the GPU stack installed (ci/gpu_setup.sh). STEPS="1 2" runs some of them; results go to
# RESULTS_DIR (default docs/results), each step's log to LOGS (default /tmp/tp4-logs), and a failed
# step does not stop the next.
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
logs=${LOGS:-/tmp/tp4-logs}
results=${RESULTS_DIR:-docs/results}
mkdir -p "$logs" "$results"
python -m tutorial.small_model || exit 1
gpu=$(python -c "from tutorial import gpus; print(gpus.node_type().lower())")x$(nvidia-smi -L | wc -l)
step() {  # N NAME COMMAND...
  local n=$1 name=$2; shift 2
  [[ " ${STEPS:-1 2 3 4} " == *" $n "* ]] || return 0
  echo "tp4: [$n] $name started $(date +%T)"
  "$@" > "$logs/$name.log" 2>&1
  echo "tp4: [$n] $name exited $? at $(date +%T)"
}
step 1 graph-capture python -m lab run graph-capture --results "$results" --logdir "$logs"
# Ready in about 5 minutes when it works: a 10-minute deadline, not the default 30.
step 2 notebook env LLM_PROFILE=rehearsal READY_TIMEOUT_S=600 python -m lab run notebook --results "$results" --name "tp4-$gpu"
step 3 planner python -m lab run capacity --tp4 --out "$results/capacity-tp4-$gpu.json"
step 4 bench python -m lab run bench --models 70b --ray-configs tutorial --min-prompts 8 \
  --prompts-per-concurrency 2 --out "$results/bench-tp4-$gpu.json" --logdir "$logs/bench"
nvidia-smi --query-gpu=index,memory.used --format=csv
