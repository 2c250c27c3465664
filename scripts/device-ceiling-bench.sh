#!/usr/bin/env bash
# How high one epoch goes under the evaluator's recipe: a grid of
# hand-built designs within the embedded run's 200-MFLOP budget, each scored
# by `nas eval` (eval.tch-one-epoch defaults: one epoch of SGD, lr 0.01,
# momentum 0.9, weight decay 5e-4, batch 128, all of Fashion-MNIST), the best
# of them again under more seeds. One command on the GPU machine, under ten
# minutes; it calibrates the 91 % target of the embedded run
# (docs/results/embedded-run.md).
#
# Here, once (after `cargo build --release -p nas-host --bin nas` and
# `cargo build --release -p nas-eval-tch-worker`, with Fashion-MNIST
# prepared: `nas data fetch fashion-mnist`):
#
#   scripts/device-ceiling-bench.sh prepare      # → .whl/ceiling-bench/ (git-ignored)
#
# There, with .whl/ceiling-bench carried along (the device tool: carry
# [".whl/ceiling-bench"]):
#
#   scripts/device-ceiling-bench.sh run [OUT_DIR] # → OUT_DIR/ceiling-bench.md, ceiling-bench.json
#
# The designs: those of scripts/ceiling-designs.py (written there with the
# machine's torch), the hand-written references of
# docs/results/embedded-run/references/ and the best design of each kept
# embedded run. Phase 1 scores each once at the evaluator's seed (43);
# phase 2 scores the TOP best of phase 1 under SEEDS more seeds, so a design
# that came first by chance shows it. Write the result to
# docs/results/ceiling-bench.md.
#
# Environment: PYTHON (default /opt/torch/.venv/bin/python3, else python3),
# SLOTS (`nas eval` processes at once, default 8), DEVICE (cuda), TOP (10),
# SEEDS ("1 2 3"), TRAIN (train examples, default all), LIMIT (designs of
# the grid, default all; for a quick try), ONLY (the names of the designs to
# score, space-separated, e.g. "ref-vgg-64-128 cnn-64-128-fc512"; default
# all), PHASE2_AFTER (seconds after which phase 2 is skipped, default 360).
# On a machine without a GPU: DEVICE=cpu PYTHON=.venv/bin/python and a few
# designs in ONLY (an epoch takes minutes there).
#
# Whether the same seed gives the same score, and at what cost: a few
# designs scored REPEATS times each at seed 43 with the evaluator's
# defaults and again with `--set deterministic=true` (torch's deterministic
# algorithms, warn-only; cuDNN deterministic, its benchmark mode off; a fixed
# cuBLAS workspace), all at once, as the study's repeats were. Each score
# with the setting on names the operations that ran without a deterministic
# implementation (`nondeterministic_ops`). With the same pack:
#
#   scripts/device-ceiling-bench.sh repeat [OUT_DIR] # → OUT_DIR/determinism-bench.md, .json
#
# Write the result to docs/results/determinism-bench.md. Environment: ONLY
# (default the study's best grid design and the first target run's best),
# REPEATS (3), MODES ("default deterministic"), SLOTS (default 6), DEVICE,
# TRAIN, PYTHON. On a machine without a GPU (DEVICE=cpu
# PYTHON=.venv/bin/python TRAIN=512 REPEATS=2) it only tries the script: the
# CPU is deterministic either way on one machine.
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
  OUT_DIR=${2:-${OUT:-/tmp/ceiling-bench}}
  mkdir -p "$OUT_DIR"
  WORK=$(mktemp -d /tmp/ceiling-bench.XXXX)
  device_unpack "$PACK" "$WORK"
  K=${SLOTS:-8} DEV=${DEVICE:-cuda} TOP=${TOP:-10} SEEDS=${SEEDS:-1 2 3}
  D=$WORK/designs
  device_designs "$D"
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
  MACHINE=$(device_machine)
  echo "$MACHINE"
  TRAIN_ARGS=()
  [ -n "${TRAIN:-}" ] && TRAIN_ARGS=(--max-train-examples "$TRAIN")
  mkdir -p "$WORK/out"
  score() { # score SEED NAME... → $WORK/out/NAME.SEED.json
    local seed=$1
    shift
    printf '%s\n' "$@" | xargs -P "$K" -I{} sh -c \
      "'$WORK/nas' eval '$D/{}.py' --dataset fashion-mnist --device '$DEV' --seed $seed --max-flops 2e8 --time-limit 300 ${TRAIN_ARGS[*]} --json > '$WORK/out/{}.$seed.json' 2> '$WORK/out/{}.$seed.err' || true"
  }
  # The machine's first CUDA start, untimed; it also shows that `nas eval`
  # works there before the grid is spent on it.
  if ! "$WORK/nas" eval "$D/$(ls "$D" | grep '\.py$' | head -1)" --dataset fashion-mnist --device "$DEV" \
    --max-train-examples 512 --json > "$WORK/warm.json" 2> "$WORK/warm.err" || ! grep -q '"status": "ok"' "$WORK/warm.json"; then
    echo "the first nas eval did not score its design:" >&2
    tail -c 3000 "$WORK/warm.json" "$WORK/warm.err" >&2
    device_diagnose
    exit 1
  fi
  grep -E '"(device|accuracy|epoch_seconds)"' "$WORK/warm.json"
  t0=$(date +%s)
  mapfile -t ALL < <(ls "$D" | grep '\.py$' | sed 's/\.py$//')
  score 43 "${ALL[@]}"
  t1=$(date +%s)
  echo "phase 1: ${#ALL[@]} designs in $((t1 - t0)) s"
  if [ $((t1 - t0)) -le "${PHASE2_AFTER:-360}" ]; then
    mapfile -t BEST < <("$PYTHON" - "$WORK/out" "$TOP" <<'PY'
import glob, json, os, sys
scores = []
for f in glob.glob(os.path.join(sys.argv[1], "*.43.json")):
    try:
        o = json.load(open(f))
    except Exception:
        continue
    if o.get("status") == "ok":
        scores.append((o["accuracy"], os.path.basename(f)[: -len(".43.json")]))
for _, name in sorted(scores, reverse=True)[: int(sys.argv[2])]:
    print(name)
PY
)
    for s in $SEEDS; do score "$s" "${BEST[@]}"; done
  fi
  t2=$(date +%s)
  echo "phase 2: $((t2 - t1)) s"
  "$PYTHON" scripts/ceiling-report.py "$WORK" "$D" "$DEV" "$MACHINE" "$((t1 - t0))" "$((t2 - t1))" "$K" "$OUT_DIR"
  ;;
repeat)
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
  sed -n '2,53p' "$0" >&2
  exit 2
  ;;
esac
