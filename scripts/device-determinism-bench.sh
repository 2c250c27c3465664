#!/usr/bin/env bash
# Whether the same seed gives the same score, and at what cost: a few
# designs scored REPEATS times each at the evaluator's seed (43) with its
# defaults and again with `--set deterministic=true` (torch's deterministic
# algorithms, warn-only; cuDNN deterministic, its benchmark mode off; a fixed
# cuBLAS workspace), all at once on the GPU machine, as the ceiling study's
# repeats were. Each score with the setting on names the operations that
# ran without a deterministic implementation (`nondeterministic_ops`).
#
# Here, once (the same pack as the ceiling study's; after `cargo build
# --release -p nas-host --bin nas` and `cargo build --release -p
# nas-eval-tch-worker`, with `nas data fetch fashion-mnist` done):
#
#   scripts/device-determinism-bench.sh prepare     # → .whl/ceiling-bench/ (git-ignored)
#
# There, with .whl/ceiling-bench carried along:
#
#   scripts/device-determinism-bench.sh run [OUT_DIR]  # → OUT_DIR/determinism-bench.md, .json
#
# Write the result to docs/results/determinism-bench.md.
#
# Environment: ONLY (the designs, as named by the ceiling study; default the
# study's best grid design and the first target run's best), REPEATS (3),
# MODES ("default deterministic"), SLOTS (`nas eval` processes at once,
# default 6), DEVICE (cuda), TRAIN (train examples, default all), PYTHON.
# On a machine without a GPU: DEVICE=cpu PYTHON=.venv/bin/python TRAIN=512
# REPEATS=2 (the CPU is deterministic either way; this only tries the script).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/device-nas.sh
PACK=.whl/ceiling-bench

case "${1:-}" in
prepare)
  device_pack "$PACK"
  du -sh "$PACK" "$PACK"/*
  ;;
run)
  OUT_DIR=${2:-${OUT:-/tmp/determinism-bench}}
  mkdir -p "$OUT_DIR"
  WORK=$(mktemp -d /tmp/determinism-bench.XXXX)
  device_unpack "$PACK" "$WORK"
  ONLY=${ONLY:-cnn-32-64p-128x2p-fc512 loop-target-run}
  K=${SLOTS:-6} DEV=${DEVICE:-cuda} REPEATS=${REPEATS:-3} MODES=${MODES:-default deterministic}
  D=$WORK/designs
  device_designs "$D"
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
  MACHINE=$(device_machine)
  echo "$MACHINE"
  TRAIN_ARGS=""
  [ -n "${TRAIN:-}" ] && TRAIN_ARGS="--max-train-examples $TRAIN"
  mkdir -p "$WORK/out"
  # One line per scoring: DESIGN MODE REPEAT.
  for name in $(ls "$D" | grep '\.py$' | sed 's/\.py$//'); do
    for mode in $MODES; do
      for r in $(seq 1 "$REPEATS"); do echo "$name $mode $r"; done
    done
  done > "$WORK/jobs"
  # The machine's first CUDA start, untimed.
  first=$(head -1 "$WORK/jobs" | cut -d' ' -f1)
  if ! "$WORK/nas" eval "$D/$first.py" --dataset fashion-mnist --device "$DEV" --max-train-examples 512 --json \
    > "$WORK/warm.json" 2> "$WORK/warm.err" || ! grep -q '"status": "ok"' "$WORK/warm.json"; then
    echo "the first nas eval did not score its design:" >&2
    tail -c 3000 "$WORK/warm.json" "$WORK/warm.err" >&2
    device_diagnose
    exit 1
  fi
  export WORK D DEV TRAIN_ARGS
  t0=$(date +%s)
  # shellcheck disable=SC2016
  xargs -P "$K" -L 1 sh -c '
    name=$1 mode=$2 r=$3
    set --
    [ "$mode" = deterministic ] && set -- --set deterministic=true
    "$WORK/nas" eval "$D/$name.py" --dataset fashion-mnist --device "$DEV" --seed 43 --max-flops 2e8 \
      --time-limit 300 $TRAIN_ARGS --json "$@" > "$WORK/out/$name.$mode.$r.json" 2> "$WORK/out/$name.$mode.$r.err" || true
  ' sh < "$WORK/jobs"
  t1=$(date +%s)
  echo "$(wc -l < "$WORK/jobs") scorings in $((t1 - t0)) s"
  "$PYTHON" scripts/determinism-report.py "$WORK/out" "$DEV" "$MACHINE" "$((t1 - t0))" "$K" "$OUT_DIR"
  ;;
*)
  sed -n '2,27p' "$0" >&2
  exit 2
  ;;
esac
