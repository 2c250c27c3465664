"""Writes determinism-bench.md and determinism-bench.json from the outcomes
of `scripts/device-ceiling-bench.sh repeat` (its last step).

    python scripts/determinism-report.py OUT DEVICE MACHINE SECONDS SLOTS OUT_DIR

OUT holds NAME.MODE.REPEAT.json (a `nas eval --json` outcome) and .err.
"""

import glob
import json
import os
import statistics
import sys

out, device, machine, seconds, slots, out_dir = sys.argv[1:7]
rows = {}
failures = []
for f in sorted(glob.glob(os.path.join(out, "*.json"))):
    name, mode, repeat = os.path.basename(f)[: -len(".json")].rsplit(".", 2)
    row = rows.setdefault((name, mode), {"design": name, "mode": mode, "accuracy": [], "train_loss": [],
                                         "epoch_s": [], "nondeterministic_ops": set()})
    try:
        o = json.load(open(f))
    except Exception:
        err = open(f[: -len(".json")] + ".err").read().strip().splitlines()
        failures.append(f"{name} {mode} #{repeat}: no outcome: {err[-1] if err else 'nothing printed'}")
        continue
    if o.get("status") != "ok":
        failures.append(f"{name} {mode} #{repeat}: {o.get('kind')}: {str(o.get('message'))[:160]}")
        continue
    row["accuracy"].append(o["accuracy"])
    row["train_loss"].append(o.get("train_loss"))
    row["epoch_s"].append(o.get("epoch_seconds") or 0.0)
    row["nondeterministic_ops"].update((o.get("extra") or {}).get("nondeterministic_ops") or [])

table = []
for (name, mode), r in sorted(rows.items()):
    acc = r["accuracy"]
    if not acc:
        continue
    table.append({
        "design": name,
        "mode": mode,
        "scores": acc,
        "distinct_scores": len(set(acc)),
        "distinct_losses": len(set(r["train_loss"])),
        "spread_points": round((max(acc) - min(acc)) * 100, 2),
        "epoch_s_mean": round(statistics.mean(r["epoch_s"]), 2),
        "nondeterministic_ops": sorted(r["nondeterministic_ops"]),
    })
# The cost: each design's mean epoch with the setting on over its mean with the defaults.
base = {t["design"]: t["epoch_s_mean"] for t in table if t["mode"] == "default"}
for t in table:
    b = base.get(t["design"])
    t["epoch_ratio"] = round(t["epoch_s_mean"] / b, 2) if b else None

os.makedirs(out_dir, exist_ok=True)
json.dump({"device": device, "machine": machine, "seconds": int(seconds), "slots": int(slots),
           "rows": table, "failures": failures},
          open(os.path.join(out_dir, "determinism-bench.json"), "w"), indent=1)
lines = [
    "# Does the same seed give the same score?",
    "",
    f"{machine} ({device}); every scoring at seed 43, {slots} at once; {seconds} s in all.",
    "",
    "| design | mode | scores (%) | distinct scores / losses | spread (points) | epoch (s) | epoch vs default | operations without a deterministic implementation |",
    "|---|---|---|---|---|---|---|---|",
]
for t in table:
    scores = " / ".join(f"{a * 100:.2f}" for a in t["scores"])
    ratio = "" if t["epoch_ratio"] is None else f"{t['epoch_ratio']:.2f}"
    ops = ", ".join(f"`{o}`" for o in t["nondeterministic_ops"]) or ("none" if t["mode"] == "deterministic" else "")
    lines.append(f"| {t['design']} | {t['mode']} | {scores} | {t['distinct_scores']} / {t['distinct_losses']} | "
                 f"{t['spread_points']:.2f} | {t['epoch_s_mean']:.2f} | {ratio} | {ops} |")
if failures:
    lines += ["", "Failures:", ""] + [f"- {f}" for f in failures]
open(os.path.join(out_dir, "determinism-bench.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
