#!/usr/bin/env bash
# LoRA training throughput of tune.lora's trainer on a GPU machine: one
# command, under five minutes.
#
# The GPU machine has torch 2.11.0 (in /opt/torch/.venv, its `python3`) but
# no registry access and no model weights. So the trainer's packages travel
# with the checkout as wheels, and the models are random-weight models of
# the Qwen2.5-Coder architectures (0.5B, 1.5B, 7B; throughput does not
# depend on the weights' values) with the real tokenizer.
#
# Here, once (needs the registry and the 0.5B GGUF for its tokenizer):
#
#   scripts/device-lora-bench.sh prepare       # → .whl/tune-lora/ (git-ignored, ~26 MB)
#
# There, with .whl/tune-lora carried along (the device tool: carry
# [".whl/tune-lora"]):
#
#   scripts/device-lora-bench.sh run [OUT_DIR] # → OUT_DIR/lora-bench-gpu.md
#
# Append the section it writes to docs/results/lora-bench.md.
#
# Environment: PYTHON (default python3), DEVICE_PYTHON_VERSION (the GPU
# machine's Python, for `prepare`; default 3.12), LORA_BENCH_SIZES (default
# "0.5b 1.5b 7b"), LORA_BENCH_ARGS (more lora_bench.py options).
set -euo pipefail
cd "$(dirname "$0")/.."
WHL=.whl/tune-lora
# The trainer's pins (scripts/setup.sh) that the GPU machine's image does not
# already hold at these versions, and what they need beyond it.
WHEELS=(transformers==5.23.0 peft==0.21.2 gguf==0.19.0 regex==2026.11.19)

case "${1:-}" in
prepare)
  PY=.venv/bin/python
  rm -rf "$WHL" && mkdir -p "$WHL/wheels" "$WHL/tokenizer"
  "$PY" -m pip download -q --no-deps --only-binary=:all: \
    --python-version "${DEVICE_PYTHON_VERSION:-3.12}" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHL/wheels" "${WHEELS[@]}"
  MODELS=${NAS_HOME:-$HOME/.cache/nas}/models
  GGUF=$MODELS/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
  [ -f "$GGUF" ] || target/release/nas models fetch qwen2.5-coder-0.5b
  "$PY" - "$GGUF" "$WHL/tokenizer" <<'EOF'
import os, sys
os.environ["HF_HUB_OFFLINE"] = "1"
from transformers import AutoTokenizer
gguf = sys.argv[1]
AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf)).save_pretrained(sys.argv[2])
EOF
  du -sh "$WHL"
  ;;
run)
  PY=${PYTHON:-python3}
  OUT_DIR=${2:-${OUT:-/tmp/lora-bench}}
  mkdir -p "$OUT_DIR"
  [ -d "$WHL/wheels" ] || { echo "no $WHL: run '$0 prepare' on a machine with the registry and carry it" >&2; exit 2; }
  SITE=/tmp/tune-lora-site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHL"/wheels/*.whl
  export PYTHONPATH=$SITE PYTHONUNBUFFERED=1
  "$PY" -c 'import importlib.metadata as m; print({p: m.version(p) for p in ("torch","transformers","peft","accelerate","gguf","safetensors","tokenizers")})'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  SIZES=(${LORA_BENCH_SIZES:-0.5b 1.5b 7b})
  SYN=()
  for s in "${SIZES[@]}"; do SYN+=(--synthetic "$s"); done
  "$PY" plugins/nas-tune-lora/bench/lora_bench.py "${SYN[@]}" --tokenizer "$WHL/tokenizer" \
    --device cuda --seq-len 1024 --batch 8 --micro-batch 8 --steps 5 --warmup 2 \
    --work /tmp/lora-bench-work --title "GPU, sequence 1024, batch 8" \
    --out "$OUT_DIR/lora-bench-gpu.md" ${LORA_BENCH_ARGS:-} 2> >(tee "$OUT_DIR/lora-bench-gpu.log" >&2)
  ;;
*)
  sed -n '2,26p' "$0" >&2
  exit 2
  ;;
esac
