#!/usr/bin/env bash
# Set up .venv and run the main job on the embedded model (SmolLM2-135M-Instruct, CPU):
# the positive control (mood) first, then honesty, each with its headroom.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/weightsteer run --behavior mood --adapter lora --max-new-tokens 64 --target-kl 1 "$@"
.venv/bin/weightsteer run --behavior honesty --adapter lora --max-new-tokens 64 --target-kl 1 "$@"
