#!/usr/bin/env bash
# Does llama.cpp serve weightsteer's GGUF exports the way weightsteer steers? Not part of CI: the
# first run builds llama-cpp-python from source (10-30 min on 2 cores); later runs take minutes.
#
#   bash scripts/llama_parity.sh [DELTA]
#
# DELTA defaults to the embedded model's mood direction, out/smollm2-135m/mood/lora/delta.safetensors
# (made first with `weightsteer run --behavior mood --adapter lora --target-kl 1` when it is missing,
# which takes a while). Its calibrated alphas (kl-*/calibration.json beside it; else ALPHAS="a,b")
# are exported as adapter GGUFs, the base model as an f32 GGUF, both loaded in llama.cpp, and
# the next-token distributions compared with weightsteer's on 20 fixed prompts (PROMPTS): the +alpha and the
# -alpha adapter at scale 1, and the +alpha adapter at scale -1 (which must give -alpha); an f16
# base GGUF (and, for the embedded model, its original Q4_1 file) are compared unsteered too.
# Exits non-zero when a KL(weightsteer || llama.cpp) mean is above 1e-3 nats or not 100x below
# the steering effect.
#
# Environment: PY (the project's python, default .venv/bin/python), MODEL (default smollm2-135m),
# WORK (default out/llama-parity), LLAMA_VENV (default ~/.cache/weightsteer/llama-venv), THREADS,
# PROMPTS (how many of the fixed prompts, default 20; fewer on a slow machine).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
MODEL=${MODEL:-smollm2-135m}
WORK=${WORK:-out/llama-parity}
LLAMA_VENV=${LLAMA_VENV:-$HOME/.cache/weightsteer/llama-venv}
LLAMA_CPP_PYTHON_VERSION=0.3.36
DEFAULT_DELTA=out/smollm2-135m/mood/lora/delta.safetensors
DELTA=${1:-$DEFAULT_DELTA}
ws() { "$PY" -m weightsteer.cli "$@"; }
mkdir -p "$WORK"

# 1. llama-cpp-python in its own cached venv, built for the CPU only
if ! "$LLAMA_VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "[parity] building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION into $LLAMA_VENV (10-30 min)" >&2
  python3 -m venv "$LLAMA_VENV"
  start=$(date +%s)
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DLLAMA_CURL=OFF" \
    "$LLAMA_VENV/bin/pip" install --no-cache-dir numpy "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
  echo "[parity] llama-cpp-python built in $(( $(date +%s) - start )) s" >&2
fi

# 2. the direction
if [ ! -f "$DELTA" ]; then
  if [ "$DELTA" != "$DEFAULT_DELTA" ]; then echo "[parity] $DELTA does not exist" >&2; exit 2; fi
  echo "[parity] no mood direction yet: building one (data, training, calibration; this takes a while)" >&2
  ws run --behavior mood --adapter lora --target-kl 1 --out out
fi

# 3. its alphas: the calibrated coefficients of the first dose, or ALPHAS="pos,neg"
read -r POS NEG NEGPOS < <("$PY" - "$DELTA" "${ALPHAS:-}" <<'EOF'
import sys
from weightsteer.export import read_calibration
delta, given = sys.argv[1], sys.argv[2]
if given:
    pos, neg = (float(x) for x in given.split(","))
else:
    calibration = read_calibration(delta)
    if calibration is None:
        sys.exit(f"[parity] no kl-*/calibration.json beside {delta}: calibrate it or set ALPHAS=pos,neg")
    dose = calibration["doses"][0]
    pos, neg = dose["pos"]["coef"], dose["neg"]["coef"]
print(repr(pos), repr(neg), repr(-pos))
EOF
)
echo "[parity] alphas: +$POS and $NEG" >&2

# 4. the GGUF files: the base (once) and one adapter per sign
[ -f "$WORK/base-f32.gguf" ] || ws export-base --model "$MODEL" --outtype f32 --out "$WORK/base-f32.gguf"
[ -f "$WORK/base-f16.gguf" ] || ws export-base --model "$MODEL" --outtype f16 --out "$WORK/base-f16.gguf"
# for the embedded model, also the original Q4_1 file its dense weights were dequantized from
ORIGINAL=$("$PY" -c "import importlib.util, pathlib; from weightsteer.models import EMBEDDED
s = EMBEDDED.get('$MODEL'); print(pathlib.Path(importlib.util.find_spec(s.package).origin).parent / s.gguf_file if s else '')")
ws export --delta "$DELTA" --model "$MODEL" --alpha "$POS" --format gguf --out "$WORK/pos.gguf"
ws export --delta "$DELTA" --model "$MODEL" --alpha "$NEG" --format gguf --out "$WORK/neg.gguf"

# 5. weightsteer's distributions, then llama.cpp's and the comparison
"$PY" scripts/llama_parity.py reference --delta "$DELTA" --model "$MODEL" --alphas "$POS,$NEG,$NEGPOS" \
  --prompts "${PROMPTS:-20}" --out "$WORK/reference.npz"
"$LLAMA_VENV/bin/python" scripts/llama_parity.py compare --reference "$WORK/reference.npz" \
  --base "$WORK/base-f32.gguf" --threads "${THREADS:-2}" --json "$WORK/parity.json" \
  --base-also "$WORK/base-f16.gguf" ${ORIGINAL:+--base-also "$ORIGINAL"} \
  --check "$WORK/pos.gguf:1:$POS" --check "$WORK/neg.gguf:1:$NEG" --check "$WORK/pos.gguf:-1:$NEGPOS"
