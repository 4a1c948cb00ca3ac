#!/usr/bin/env bash
# Print the Python to build .venv with: $PYTHON if set, else the first of python3.11, 3.12 and
# 3.13 on PATH that runs (pyenv shims exist for versions that are not active, and fail).
# 3.11 comes first: it is the version the pinned CPU stack was tested with end to end.
set -euo pipefail
for candidate in ${PYTHON:-python3.11 python3.12 python3.13}; do
  if version=$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); then
    case "$version" in
      3.11 | 3.12 | 3.13) echo "$candidate"; exit 0 ;;
      *) echo "pick_python: $candidate is Python $version; the CPU stack needs 3.11 to 3.13" >&2 ;;
    esac
  fi
done
echo "pick_python: no Python 3.11 to 3.13 found${PYTHON:+ (PYTHON=$PYTHON)}; install one, or set PYTHON to its path" >&2
exit 1
