#!/usr/bin/env bash
# README command 2: set up, then run every test on the small model, the notebook end to end under
# nbmake once among them (tests/test_notebook.py); `-m "not deploys"` runs only those that start nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cpu_env.sh
bash lab/prometheus.sh  # the monitoring test scrapes Ray with a real Prometheus server
python -m pytest tests -v --durations=15 "$@"
