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
*)
  sed -n '2,39p' "$0" >&2
  exit 2
  ;;
esac
