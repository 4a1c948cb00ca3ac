#!/usr/bin/env bash
# Install the pinned GPU stack on a GPU runner, beside the runner's own torch.
#   With a package index:  the reader's scripts/gpu_setup.sh without the weights (.venv-gpu).
#   Air-gapped:            WHEELHOUSE_PARTS=DIR (parts from ci/wheelhouse.py pack) installs
#                          offline into .gpu-site, put on PYTHONPATH.
# On GitHub Actions the paths are exported to the following steps.
set -euo pipefail
cd "$(dirname "$0")/.."

export_var() {  # NAME VALUE: for this shell and, on Actions, for later steps
  export "$1=$2"
  if [ -n "${GITHUB_ENV:-}" ]; then echo "$1=$2" >> "$GITHUB_ENV"; fi
}

if [ -n "${WHEELHOUSE_PARTS:-}" ]; then
  python3 ci/wheelhouse.py install --parts "$WHEELHOUSE_PARTS" --target "$PWD/.gpu-site"
  export_var PYTHONPATH "$PWD/.gpu-site${PYTHONPATH:+:$PYTHONPATH}"
  # ci/gpu_notebook.sh and the notebook's cells call `python`, which a runner may lack.
  mkdir -p .gpu-site/bin && printf '#!/bin/sh\nexec python3 "$@"\n' > .gpu-site/bin/python && chmod +x .gpu-site/bin/python
  export_var PATH "$PWD/.gpu-site/bin:$PATH"
else
  SKIP_WEIGHTS=1 bash scripts/gpu_setup.sh
  export_var PATH "$PWD/.venv-gpu/bin:$PATH"
fi
python -c "
import ray, torch, vllm
n = torch.cuda.device_count()
print('ray', ray.__version__, 'vllm', vllm.__version__, 'torch', torch.__version__, 'GPUs', n)
if n == 0:
    raise SystemExit('gpu_setup: torch sees no GPU on this runner')
"
