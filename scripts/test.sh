#!/usr/bin/env bash
# README command 2: set up, then run the static tests and the notebook end to end under nbmake
# on the small model (conftest.py tears the deployment down after the notebook, pass or fail).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cpu_env.sh
bash lab/prometheus.sh  # the monitoring test scrapes Ray with a real Prometheus server
python -m pytest tests notebook.ipynb --nbmake --nbmake-timeout="$CELL_TIMEOUT_S" -v --durations=15 "$@"
