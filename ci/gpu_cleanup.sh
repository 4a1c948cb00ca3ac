#!/usr/bin/env bash
# Always the last step of a GPU job (also after a failure or a cancel): stop the deployment and
# Ray, then prove that nothing of ours holds the port, a process or GPU memory.
set -uo pipefail
cd "$(dirname "$0")/.."

python3 -m tutorial.teardown
rc=$?
left=$(nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader)
if [ -n "$left" ]; then
  echo "GPU processes still running:"; echo "$left"
  rc=1
fi
exit "$rc"
