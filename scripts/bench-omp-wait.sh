#!/usr/bin/env bash
# The evaluator's OpenMP waiting against the embedded LLM, side by side in
# one run: one iteration of the main job on the embedded defaults
# (`nas run --max-iterations 1`, the README's command), then the same with
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
# idle machine (its load average goes into the file). About 10 minutes a
# round on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-1}
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
            "$NAS" run --max-iterations 1 --run-dir "$dir" > "$WORK/$arm-$round.log" 2>&1
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
            "$NAS" run --config "$WORK/active.toml" --max-iterations 1 --run-dir "$dir" > "$WORK/$arm-$round.log" 2>&1
        fi
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

"$PY" - "$WORK" "$ROUNDS" "$OUT" "$load_before" "$load_after" <<'EOF'
import json, os, sqlite3, sys
work, rounds, out, before, after = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
rows, sums = [], {}
for r in range(1, rounds + 1):
    for arm in ("auto", "active"):
        db = sqlite3.connect(os.path.join(work, f"{arm}-{r}", "run.sqlite"))
        (rec,) = db.execute("select record from iterations where iteration = 1").fetchone()
        rec = json.loads(rec)
        g, i = rec["generator_usage"], rec["improver_usage"]
        tok = g["tokens_in"] + g["tokens_out"] + i["tokens_in"] + i["tokens_out"]
        llm = g["seconds"] + i["seconds"]
        rows.append((r, arm, g, i, llm, tok, rec["eval_seconds"], rec["wall_seconds"], rec["outcome"]["status"]))
        s = sums.setdefault(arm, [0.0, 0.0, 0.0])
        s[0] += llm; s[1] += tok; s[2] += rec["eval_seconds"]
with open(out, "w") as f:
    f.write("# The evaluator's OpenMP waiting against the embedded LLM\n\n")
    f.write("Written by `scripts/bench-omp-wait.sh`: one iteration of `nas run` on the embedded defaults "
            "(Qwen2.5-Coder-1.5B through llama.cpp, Fashion-MNIST, the one-epoch evaluator), with the evaluator's "
            "`omp_wait_policy` at its default (`auto`) and at `active`, alternating, "
            f"{rounds} round(s). The LLM counts the cores left free before each call.\n\n")
    f.write(f"Machine: {cpu} ({os.cpu_count()} cores). Load average (1/5/15 min) before: {before}; after: {after}.\n\n")
    f.write("| round | omp_wait_policy | generator: tokens in / out, s | Improver: tokens in / out, s | LLM tokens/s | evaluator s | iteration s | outcome |\n")
    f.write("|---|---|---|---|---|---|---|---|\n")
    for r, arm, g, i, llm, tok, ev, wall, st in rows:
        f.write(f"| {r} | `{arm}` | {g['tokens_in']} / {g['tokens_out']}, {g['seconds']:.1f} | "
                f"{i['tokens_in']} / {i['tokens_out']}, {i['seconds']:.1f} | {tok / llm:.1f} | {ev:.1f} | {wall:.1f} | {st} |\n")
    a, b = sums["auto"], sums["active"]
    f.write(f"\nLLM tokens (read and written) per second, all rounds: `auto` {a[1] / a[0]:.1f}, `active` {b[1] / b[0]:.1f}: "
            f"**{(a[1] / a[0]) / (b[1] / b[0]):.2f}x** with the default. Evaluator seconds: `auto` {a[2]:.1f}, `active` {b[2]:.1f} "
            f"(ratio {a[2] / b[2]:.2f}).\n")
print(open(out).read())
EOF
