#!/usr/bin/env bash
# Evaluation slots on one GPU: 1 against 4, with eval.tch-one-epoch on
# Fashion-MNIST and small nets. One command on the GPU machine, under five
# minutes.
#
# The GPU machine has torch (in /opt/torch/.venv, its `python3`) but no Rust
# toolchain and no network. So the `nas` binary, the training worker and the
# prepared dataset travel with the checkout, compressed to fit what the
# device tool carries (64 MiB).
#
# Here, once (after `cargo build --release -p nas-host --bin nas` and
# `cargo build --release -p nas-eval-tch-worker`, with Fashion-MNIST
# prepared: `nas data fetch fashion-mnist`):
#
#   scripts/device-islands-bench.sh prepare      # → .whl/islands-bench/ (git-ignored)
#
# There, with .whl/islands-bench carried along (the device tool: carry
# [".whl/islands-bench"]):
#
#   scripts/device-islands-bench.sh run [OUT_DIR] # → OUT_DIR/islands-bench-gpu.md
#
# What it measures: the same CANDIDATES small nets (default 8) scored by
# `nas eval` one at a time (slots = 1), then SLOTS at a time (default 4) on
# the same GPU, side by side in one run; candidates per hour of each arm, the
# speed-up, each trainee's own peak memory as the evaluator reports it, and
# the device's largest memory use (nvidia-smi, sampled every 0.2 s). Each
# `nas eval` is one evaluator instance with its own worker, as each slot of
# `nas run` is (a slot's worker stays up between candidates; here each
# candidate pays the worker start and the dataset load, in both arms alike).
# Append the file it writes to docs/results/islands-bench.md.
#
# Environment: PYTHON (default /opt/torch/.venv/bin/python3, else python3),
# CANDIDATES (8), SLOTS (4), DEVICE (cuda), TRAIN (train examples per
# candidate, default 20000).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/device-nas.sh
PACK=.whl/islands-bench

case "${1:-}" in
prepare)
  device_pack "$PACK"
  du -sh "$PACK" "$PACK"/*
  ;;
run)
  OUT_DIR=${2:-${OUT:-/tmp/islands-bench}}
  mkdir -p "$OUT_DIR"
  WORK=$(mktemp -d /tmp/islands-bench.XXXX)
  device_unpack "$PACK" "$WORK"
  N=${CANDIDATES:-8} K=${SLOTS:-4} DEV=${DEVICE:-cuda} TRAIN=${TRAIN:-20000}
  # N small nets of different widths (a few thousand to a few hundred
  # thousand parameters).
  for i in $(seq 1 "$N"); do
    w=$((8 * i))
    cat > "$WORK/cand-$i.py" <<EOF
import torch.nn as nn
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, $w, 3, padding=1), nn.BatchNorm2d($w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d($w, $((2 * w)), 3, padding=1), nn.BatchNorm2d($((2 * w))), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear($((2 * w)) * (h // 4) * (w // 4), num_classes)
    def forward(self, x):
        return self.head(self.features(x).flatten(1))
EOF
  done
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
  GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1 || echo "no nvidia-smi")
  echo "$GPU"
  # One candidate first, untimed: the first CUDA start of the machine.
  "$WORK/nas" eval "$WORK/cand-1.py" --dataset fashion-mnist --device "$DEV" --max-train-examples 512 --json > /dev/null 2>&1 || true

  arm() { # arm SLOTS → prints seconds; outcomes in $WORK/out-SLOTS-i.json
    local k=$1
    local mem=$WORK/mem-$k.log
    (while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1 >> "$mem"; sleep 0.2; done) &
    local sampler=$!
    local t0=$(date +%s.%N)
    seq 1 "$N" | xargs -P "$k" -I{} sh -c \
      "'$WORK/nas' eval '$WORK/cand-{}.py' --dataset fashion-mnist --device '$DEV' --max-train-examples $TRAIN --json > '$WORK/out-$k-{}.json' 2> '$WORK/err-$k-{}.log' || true"
    local t1=$(date +%s.%N)
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    echo "$t0 $t1" > "$WORK/time-$k"
  }
  arm 1
  arm "$K"

  "$PYTHON" - "$WORK" "$N" "$K" "$DEV" "$TRAIN" "$GPU" "$OUT_DIR/islands-bench-gpu.md" <<'EOF'
import json, os, statistics, sys
work, n, k, dev, train, gpu, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
def arm(slots):
    t0, t1 = map(float, open(f"{work}/time-{slots}").read().split())
    ok, peaks, accs, fails = 0, [], [], []
    for i in range(1, n + 1):
        try:
            o = json.load(open(f"{work}/out-{slots}-{i}.json"))
        except Exception:
            fails.append(f"cand-{i}: no outcome ({open(f'{work}/err-{slots}-{i}.log').read().strip().splitlines()[-1:]})")
            continue
        report = o.get("report") or (o.get("outcome") or {}).get("report") or (o if "accuracy" in o else None)
        if report and report.get("accuracy") is not None:
            ok += 1
            accs.append(report["accuracy"])
            if report.get("peak_memory_bytes"):
                peaks.append(report["peak_memory_bytes"] / 2**20)
        else:
            fails.append(f"cand-{i}: {json.dumps(o)[:200]}")
    mem = [int(x) for x in open(f"{work}/mem-{slots}.log").read().split() if x.strip().isdigit()] if os.path.exists(f"{work}/mem-{slots}.log") else []
    return dict(wall=t1 - t0, ok=ok, peaks=peaks, accs=accs, fails=fails, device_max=max(mem) if mem else None)
a, b = arm(1), arm(k)
rate = lambda r: r["ok"] / r["wall"] * 3600
lines = [f"## Evaluation slots on a GPU: 1 against {k}", "",
         f"Written by `scripts/device-islands-bench.sh run`. GPU: {gpu}. Device `{dev}`; {n} small CNNs "
         f"(conv-BN-ReLU-pool ×2, widths 8..{8 * n}), eval.tch-one-epoch defaults, Fashion-MNIST, {train} training "
         "images each, every candidate a `nas eval` process (its own evaluator, worker and resident data). "
         "Both arms ran one after the other in this one run.", "",
         "| slots | candidates scored | wall s | candidates/hour | speed-up | trainee peak MiB (median, max) | device memory used, max MiB |",
         "|---|---|---|---|---|---|---|"]
for slots, r in ((1, a), (k, b)):
    pk = f"{statistics.median(r['peaks']):.0f}, {max(r['peaks']):.0f}" if r["peaks"] else "not reported"
    lines.append(f"| {slots} | {r['ok']}/{n} | {r['wall']:.1f} | {rate(r):.0f} | **{rate(r) / max(rate(a), 1e-9):.2f}×** | {pk} | {r['device_max'] if r['device_max'] is not None else 'n/a'} |")
for slots, r in ((1, a), (k, b)):
    for f in r["fails"]:
        lines.append(f"\n- slots {slots}: {f}")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
  ;;
*)
  sed -n '2,34p' "$0" >&2
  exit 2
  ;;
esac
