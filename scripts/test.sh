#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs, then
# runs every test of the workspace (release build, shared with the main job).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --model qwen2.5-coder-0.5b
export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1
# The wasm tests build C guests from source; with this set they fail (not
# skip) when the toolchain is missing, so a broken setup cannot pass quietly.
export NAS_REQUIRE_WASM_TOOLCHAIN=1
# Every test binary runs even after one fails, so one run shows every failure.
cargo test --release --workspace --no-fail-fast "$@"
