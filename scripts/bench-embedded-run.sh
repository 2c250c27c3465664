#!/usr/bin/env bash
# The main job's target run, as a benchmark: 50 iterations of `nas run` on the
# embedded defaults (the local Qwen2.5-Coder-1.5B, Fashion-MNIST, the one-epoch
# evaluator, the K=5 window), its report written beside the results.
#
#   scripts/bench-embedded-run.sh          # start the run, or continue it
#   scripts/bench-embedded-run.sh save     # copy the run so far into the repo, and its report
#   NAS_TARGET_NAME=target-run-2 scripts/bench-embedded-run.sh   # another run, beside the first
#
# On 2 cores an iteration takes about 5 minutes, so the run takes longer than
# one sitting on a machine that does not last. The run is kept in the repo
# (docs/results/embedded-run/NAME/store: its config, plugins and a
# consistent copy of run.sqlite); on a machine without runs/embedded-NAME
# the script starts from that copy with `nas resume`, so the run goes on where
# the last machine stopped. `save` (also done when the run stops, Ctrl-C
# included) writes the copy and the report: summary.md, iterations.md (what
# happened in each iteration), the figures and the best design.
set -euo pipefail
cd "$(dirname "$0")/.."
ITERATIONS=${NAS_TARGET_ITERATIONS:-50}
NAME=${NAS_TARGET_NAME:-target-run}
RUN=runs/embedded-$NAME
OUT=docs/results/embedded-run/$NAME
STORE=$OUT/store

save() {
  [ -f "$RUN/run.sqlite" ] || { echo "bench-embedded-run: no run in $RUN to save" >&2; return 1; }
  mkdir -p "$STORE"
  # The run's own files (config.toml, plugins.json); not the evaluator's
  # scratch, the lock or the report made from it.
  for f in "$RUN"/*; do
    [ -f "$f" ] || continue
    case "$(basename "$f")" in
      run.sqlite|run.sqlite-*|run.lock) ;;
      *) cp "$f" "$STORE/" ;;
    esac
  done
  # SQLite's online backup: a consistent copy while the run writes, the
  # write-ahead log folded in; then compacted.
  rm -f "$STORE/run.sqlite.tmp"
  .venv/bin/python - "$RUN/run.sqlite" "$STORE/run.sqlite.tmp" <<'EOF'
import sqlite3, sys
src = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
dst = sqlite3.connect(sys.argv[2])
src.backup(dst)
dst.execute("PRAGMA journal_mode=DELETE")
dst.execute("VACUUM")
dst.close()
src.close()
EOF
  mv "$STORE/run.sqlite.tmp" "$STORE/run.sqlite"
  target/release/nas report "$RUN" --out "$RUN/report" >/dev/null
  cp "$RUN"/report/figures/*.svg "$RUN/report/iterations.md" "$OUT/"
  # The Markdown names the PNGs; the repo keeps the SVGs.
  sed 's|(figures/\([a-z_]*\)\.png)|(\1.svg)|g' "$RUN/report/summary.md" > "$OUT/summary.md"
  .venv/bin/python - "$RUN/report/summary.json" "$RUN/report/records-full.jsonl" "$OUT/best.py" <<'EOF'
import json, sys
summary = json.load(open(sys.argv[1]))
best = (summary["runs"][0]["summary"].get("best") or [None])[0]
for line in open(sys.argv[2]):
    r = json.loads(line)["record"]
    if r["iteration"] == best:
        open(sys.argv[3], "w").write(r["code"])
EOF
  echo "bench-embedded-run: saved $(sqlite_iterations) iterations to $STORE and the report to $OUT" >&2
}

sqlite_iterations() {
  .venv/bin/python -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from iterations').fetchone()[0])" "$STORE/run.sqlite"
}

if [ "${1:-}" = "save" ]; then
  save
  exit
fi

scripts/setup.sh --model qwen2.5-coder-1.5b
if [ ! -f "$RUN/run.sqlite" ] && [ -f "$STORE/run.sqlite" ]; then
  echo "bench-embedded-run: continuing the run saved in $STORE ($(sqlite_iterations) iterations)" >&2
  mkdir -p runs
  cp -r "$STORE" "$RUN"
fi
trap save EXIT
if [ -f "$RUN/run.sqlite" ]; then
  target/release/nas resume "$RUN" || true
else
  target/release/nas run --max-iterations "$ITERATIONS" --run-dir "$RUN" || true
fi
