#!/usr/bin/env bash
# Set up .venv and run the main job on the embedded model (SmolLM2-135M-Instruct, CPU): the positive
# control (mood) and honesty, each with its headroom and what it costs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# MMLU (the capability line) comes from the hub, or from a local copy beside the repository when there is one.
mmlu=()
if [ -f ../shared/data/mmlu/test.jsonl ]; then mmlu=(--mmlu-dir ../shared/data/mmlu); fi
# bf16 matrix products where the CPU has them (AMX / AVX512-BF16), float32 elsewhere; weights and steering stay
# float32 (docs/performance.md). Pass --matmul-dtype float32 to run everything in float32.
args=(--adapter lora --max-new-tokens 64 --target-kl 1 --matmul-dtype auto "${mmlu[@]}" "$@")

# The two behaviours run side by side, each on half of the cores: on two idle cores that took 4:19-4:58
# (docs/results.md); one after the other on two threads each, an earlier version took 7:01 against 4:52
# side by side (docs/performance.md).
# mood prints as it goes; honesty's progress goes to a log, and its table follows mood's.
if [ -z "${OMP_NUM_THREADS:-}" ]; then
  cores=$(nproc)
  export OMP_NUM_THREADS=$(( cores > 1 ? cores / 2 : 1 ))
fi
logs=$(mktemp -d "${TMPDIR:-/tmp}/weightsteer-demo.XXXXXX")
.venv/bin/weightsteer run --behavior honesty "${args[@]}" > "$logs/honesty.out" 2> "$logs/honesty.log" &
honesty=$!
# Ctrl-C or a failed mood run stops honesty too; its log goes once what matters of it has been shown
trap 'kill "$honesty" 2> /dev/null || true; rm -rf "$logs"' EXIT
.venv/bin/weightsteer run --behavior mood "${args[@]}"
echo "[demo] mood done; honesty (its progress: $logs/honesty.log)" >&2
status=0
wait "$honesty" || status=$?
if [ "$status" -ne 0 ]; then
  tail -n 5 "$logs/honesty.log" >&2
  exit "$status"
fi
tail -n 3 "$logs/honesty.log" >&2
cat "$logs/honesty.out"
