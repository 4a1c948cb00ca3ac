# Sourced by scripts/tutorial.sh and scripts/test.sh: set up .venv, activate it, and pick the small model
# on the CPU. The notebook's cell timeout stays above READY_TIMEOUT_S, so the deployment's own
# deadline fires first and the cell fails with the replica's log tail.
bash scripts/setup_venv.sh
source .venv/bin/activate
export LLM_PROFILE=${LLM_PROFILE:-cpu}
export READY_TIMEOUT_S=${READY_TIMEOUT_S:-600}
CELL_TIMEOUT_S=$((READY_TIMEOUT_S + 300))
