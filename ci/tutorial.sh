#!/usr/bin/env bash
# README command 1: set up, then run the whole notebook for real on the small model on the CPU,
# leaving the executed copy in notebook.executed.ipynb. Whatever happens, the deployment and
# the Ray cluster are torn down before this script exits.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/cpu_env.sh
trap 'python -m tutorial.teardown' EXIT

start=$SECONDS
jupyter nbconvert --to notebook --execute notebook.ipynb --output notebook.executed.ipynb \
  --ExecutePreprocessor.timeout="$CELL_TIMEOUT_S"
echo "tutorial: notebook executed in $((SECONDS - start)) s -> notebook.executed.ipynb"
