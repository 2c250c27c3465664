#!/usr/bin/env bash
# LoRA training throughput of tune.lora's trainer on this machine's CPU, for
# the 0.5B and 1.5B Qwen2.5-Coder GGUF files llm.local serves; appends a
# section to docs/results/lora-bench.md.
#
#   plugins/nas-tune-lora/bench/lora_bench.sh [extra lora_bench.py options]
#
# Needs the project's virtualenv with the trainer's packages (scripts/setup.sh)
# and target/release/nas (to fetch a missing model). The first run per model
# dequantises it into the trainer's cache (~4 bytes per parameter on disk).
set -euo pipefail
cd "$(dirname "$0")/../../.."
MODELS=${NAS_HOME:-$HOME/.cache/nas}/models
for m in qwen2.5-coder-0.5b qwen2.5-coder-1.5b; do
  [ -f "$MODELS/$m-instruct-q4_k_m.gguf" ] || target/release/nas models fetch "$m"
done
exec .venv/bin/python plugins/nas-tune-lora/bench/lora_bench.py \
  --model "0.5b=$MODELS/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" \
  --model "1.5b=$MODELS/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf" \
  --device cpu --seq-len 256 --batch 1 --steps 3 --warmup 1 \
  --cache-dir "$MODELS/transformers" \
  --title "CPU, sequence 256, batch 1" \
  --out docs/results/lora-bench.md "$@"
