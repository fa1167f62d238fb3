#!/usr/bin/env bash
# Set up .venv and run the main job on the embedded model (SmolLM2-135M-Instruct, CPU):
# the positive control (mood) first, then honesty, each with its headroom and what it costs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# MMLU (the capability line) comes from the hub, or from a local copy beside the repository when there is one.
mmlu=()
if [ -f ../shared/data/mmlu/test.jsonl ]; then mmlu=(--mmlu-dir ../shared/data/mmlu); fi
# bf16 matrix products where the CPU has them (AMX / AVX512-BF16), float32 elsewhere; weights and steering stay
# float32 (docs/performance.md). Pass --matmul-dtype float32 to run everything in float32.
.venv/bin/weightsteer run --behavior mood --adapter lora --max-new-tokens 64 --target-kl 1 --matmul-dtype auto "${mmlu[@]}" "$@"
.venv/bin/weightsteer run --behavior honesty --adapter lora --max-new-tokens 64 --target-kl 1 --matmul-dtype auto "${mmlu[@]}" "$@"
