#!/usr/bin/env bash
# The evaluator's OpenMP waiting against the embedded LLM, side by side in
# one run: ITERATIONS iterations (default 2) of the main job on the embedded
# defaults (`nas run`, the README's command), then the same with
# `[evaluator.settings] omp_wait_policy = "active"`, alternating for ROUNDS
# rounds (default 1). Between evaluations the evaluator's worker waits while
# the host's LLM writes and diagnoses; an active OpenMP team spins on a core
# all that time, and the LLM, which counts the cores left free, runs on
# fewer threads.
#
#   scripts/bench-omp-wait.sh            # → docs/results/omp-wait-bench.md
#
# Needs what `scripts/setup.sh` builds (target/release/nas, the worker, the
# virtualenv, the embedded model and Fashion-MNIST); run it on an otherwise
# idle machine (its load average goes into the file). About 15 minutes a
# round on 2 cores. The first generator call of a run comes before the
# worker exists; every later call waits beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-1}
ITERATIONS=${ITERATIONS:-2}
OUT=${OUT:-docs/results/omp-wait-bench.md}
NAS=target/release/nas
PY=.venv/bin/python
[ -x "$NAS" ] || { echo "bench-omp-wait: $NAS is missing (run scripts/setup.sh)" >&2; exit 1; }
[ -x "$PY" ] || { echo "bench-omp-wait: $PY is missing (run scripts/setup.sh)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/nas-omp-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

for round in $(seq 1 "$ROUNDS"); do
    for arm in auto active; do
        dir="$WORK/$arm-$round"
        echo "bench-omp-wait: round $round, omp_wait_policy = $arm ..." >&2
        if [ "$arm" = auto ]; then
            "$NAS" run --max-iterations "$ITERATIONS" --run-dir "$dir" > "$WORK/$arm-$round.log" 2>&1
            # The embedded defaults as this binary resolves them, for the other arm.
            cp "$dir/config.toml" "$WORK/embedded.toml"
        else
            "$PY" - "$WORK/embedded.toml" "$WORK/active.toml" <<'EOF'
import sys
text = open(sys.argv[1]).read()
assert "[evaluator.settings]\n" in text, "the run's config has no [evaluator.settings]"
text = text.replace("[evaluator.settings]\n", '[evaluator.settings]\nomp_wait_policy = "active"\n', 1)
open(sys.argv[2], "w").write(text)
EOF
            "$NAS" run --config "$WORK/active.toml" --max-iterations "$ITERATIONS" --run-dir "$dir" > "$WORK/$arm-$round.log" 2>&1
        fi
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

"$PY" scripts/bench-omp-wait-report.py "$WORK" "$ROUNDS" "$OUT" "$load_before" "$load_after"
