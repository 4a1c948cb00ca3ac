#!/usr/bin/env bash
# README command 2: set up, then run the static tests and the notebook end to end under nbmake
# on the small model (conftest.py tears the deployment down after the notebook, pass or fail).
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup_venv.sh
source .venv/bin/activate

export LLM_PROFILE=${LLM_PROFILE:-cpu}
export READY_TIMEOUT_S=${READY_TIMEOUT_S:-600}
# The cell timeout is above READY_TIMEOUT_S so the wait cell fails with its own log tail first.
python -m pytest tests notebook.ipynb --nbmake --nbmake-timeout=$((READY_TIMEOUT_S + 300)) -v "$@"
