#!/usr/bin/env bash
# README command 1: set up, then run the whole notebook for real on the small model on the CPU,
# leaving the executed copy in notebook.executed.ipynb. Whatever happens, the deployment and
# the Ray cluster are torn down before this script exits.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup_venv.sh
source .venv/bin/activate

export LLM_PROFILE=${LLM_PROFILE:-cpu}
export READY_TIMEOUT_S=${READY_TIMEOUT_S:-600}
trap 'python -m tutorial.teardown' EXIT

start=$SECONDS
# The cell timeout is above READY_TIMEOUT_S so the wait cell fails with its own log tail first.
jupyter nbconvert --to notebook --execute notebook.ipynb --output notebook.executed.ipynb \
  --ExecutePreprocessor.timeout=$((READY_TIMEOUT_S + 300))
echo "tutorial: notebook executed in $((SECONDS - start)) s -> notebook.executed.ipynb"
