"""The table of scripts/bench-omp-wait.sh, from its run directories."""
import json
import os
import sqlite3
import sys

work, rounds, out, before, after = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")


def rate(u):
    return (u["tokens_in"] + u["tokens_out"]) / u["seconds"] if u["seconds"] > 0 else float("nan")


def fmt(u):
    return f"{u['tokens_in']} / {u['tokens_out']}, {u['seconds']:.1f} s ({rate(u):.1f}/s)"


rows, sums = [], {}
for r in range(1, rounds + 1):
    for arm in ("auto", "active"):
        db = sqlite3.connect(os.path.join(work, f"{arm}-{r}", "run.sqlite"))
        for it, rec in db.execute("select iteration, record from iterations order by iteration"):
            rec = json.loads(rec)
            g, i = rec["generator_usage"], rec["improver_usage"]
            rep = rec["outcome"].get("report") or {}
            rows.append((r, arm, it, g, i, rep.get("epoch_seconds"), rec["eval_seconds"], rec["outcome"]["status"]))
            s = sums.setdefault(arm, [0, 0.0, 0.0])
            # The calls made while the worker exists: all but a run's first generator call.
            for u in ([g] if it > 1 else []) + [i]:
                s[0] += u["tokens_in"] + u["tokens_out"]
                s[1] += u["seconds"]
            s[2] += rec["eval_seconds"]

with open(out, "w") as f:
    f.write("# The evaluator's OpenMP waiting against the embedded LLM\n\n")
    f.write(
        "Written by `scripts/bench-omp-wait.sh`: the first iterations of `nas run` on the embedded defaults "
        "(Qwen2.5-Coder-1.5B through llama.cpp, Fashion-MNIST, the one-epoch evaluator), with the evaluator's "
        f"`omp_wait_policy` at its default (`auto`) and at `active`, alternating, {rounds} round(s). The LLM counts "
        "the cores left free before each call; a run's first generator call comes before the evaluator's worker "
        "exists, every later call waits beside it.\n\n"
    )
    f.write(f"Machine: {cpu} ({os.cpu_count()} cores). Load average (1/5/15 min) before: {before}; after: {after}.\n\n")
    f.write(
        "| round | omp_wait_policy | iteration | generator: tokens in / out, s (tokens/s) "
        "| Improver: tokens in / out, s (tokens/s) | epoch s | evaluator s | outcome |\n"
    )
    f.write("|---|---|---|---|---|---|---|---|\n")
    for r, arm, it, g, i, epoch, ev, st in rows:
        e = f"{epoch:.1f}" if epoch else ""
        f.write(f"| {r} | `{arm}` | {it} | {fmt(g)} | {fmt(i)} | {e} | {ev:.1f} | {st} |\n")
    a, b = sums["auto"], sums["active"]
    f.write(
        f"\nLLM tokens (read and written) per second of the calls beside the worker, all rounds: "
        f"`auto` {a[0] / a[1]:.1f}, `active` {b[0] / b[1]:.1f}: **{(a[0] / a[1]) / (b[0] / b[1]):.2f}x** with the "
        f"default. Evaluator seconds: `auto` {a[2]:.1f}, `active` {b[2]:.1f} (the designs differ where the answers do).\n"
    )
print(open(out).read())
