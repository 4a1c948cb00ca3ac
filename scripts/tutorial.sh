#!/usr/bin/env bash
# README command 1: set up, then run the whole notebook for real on the small model on the CPU,
# leaving the executed copy in notebook.executed.ipynb. Whatever happens, the deployment and
# the Ray cluster are torn down before this script exits.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cpu_env.sh
trap 'python -m tutorial.teardown' EXIT

# Names each cell as it starts and says how long it took: the whole run takes minutes.
python scripts/run_notebook.py notebook.ipynb notebook.executed.ipynb --timeout "$CELL_TIMEOUT_S"
