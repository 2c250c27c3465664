"""Writes ceiling-bench.md and ceiling-bench.json from the outcomes of
scripts/device-ceiling-bench.sh (its last step; also runs on a copy of WORK).

    python scripts/ceiling-report.py WORK DESIGNS DEVICE GPU PHASE1_S PHASE2_S SLOTS OUT_DIR
"""

import glob
import json
import os
import statistics
import sys

work, designs, device, machine, p1, p2, slots, out_dir = sys.argv[1:9]
TARGET = 0.91
# The references' one-epoch accuracies on the CPU (docs/results/embedded-run.md,
# "How high one epoch goes under this recipe"), for the device cross-check.
CPU_REFERENCES = {
    "ref-vgg-32-64": 0.9049,
    "ref-vgg-64-128": 0.9069,
    "ref-resnet-small": 0.8444,
    "ref-vgg-32-64-bn-head": 0.9038,
    "ref-cnn-32-64-128-bn-head": 0.9089,
    "ref-cnn-32-64-128x2-bn-head": 0.9086,
    "ref-cnn-32-64-128-bn-head-1024": 0.9020,
}

meta = {d["name"]: d for d in json.load(open(os.path.join(designs, "designs.json")))}
rows = {}
failures = []
for f in sorted(glob.glob(os.path.join(work, "out", "*.json"))):
    name, seed = os.path.basename(f)[: -len(".json")].rsplit(".", 1)
    row = rows.setdefault(name, {"name": name, "scores": {}, "epoch_s": [], "params": None, "mflops": None})
    try:
        o = json.load(open(f))
    except Exception:
        err = open(f[: -len(".json")] + ".err").read().strip().splitlines()
        failures.append(f"{name} (seed {seed}): no outcome: {err[-1] if err else 'nothing printed'}")
        continue
    if o.get("status") != "ok":
        failures.append(f"{name} (seed {seed}): {o.get('kind')}: {str(o.get('message'))[:160]}")
        continue
    row["scores"][int(seed)] = o["accuracy"]
    row["params"] = o.get("params")
    row["mflops"] = round(o["flops"] / 1e6, 1) if o.get("flops") else None
    if o.get("epoch_seconds"):
        row["epoch_s"].append(o["epoch_seconds"])
    row["device"] = o.get("device")


def description(name):
    if name in meta:
        return meta[name]["description"]
    if name.startswith("ref-"):
        return f"hand-written reference `{name[4:]}.py`"
    if name.startswith("loop-"):
        return f"the best design the embedded loop found (`{name[5:]}`)"
    return name


scored = [r for r in rows.values() if 43 in r["scores"]]
for r in scored:
    s = list(r["scores"].values())
    r["mean"] = statistics.mean(s)
    r["sd"] = statistics.stdev(s) if len(s) > 1 else None
    r["n"] = len(s)
scored.sort(key=lambda r: -r["scores"][43])
multi = sorted([r for r in scored if r["n"] > 1], key=lambda r: -r["mean"])
over = [r for r in scored if r["scores"][43] >= TARGET]
over_mean = [r for r in multi if r["mean"] >= TARGET]
pct = lambda a: f"{100 * a:.2f} %"

lines = [
    f"## The one-epoch ceiling on `{device}`",
    "",
    f"Written by `scripts/device-ceiling-bench.sh run`. Machine: {machine}. Device `{device}`, {slots} `nas eval` at once; "
    "eval.tch-one-epoch defaults (one epoch of SGD, lr 0.01, momentum 0.9, weight decay 5e-4, batch 128), "
    + (f"the first {os.environ['TRAIN']} training images" if os.environ.get("TRAIN") else "all 60,000 training images")
    + " and the 10,000 test images of Fashion-MNIST, `--max-flops 2e8` as in the embedded run. Phase 1: "
    f"{len(rows)} designs at seed 43 ({p1} s); phase 2: the best of them under more seeds ({p2} s).",
    "",
    f"**{len(over)} of {len(scored)} designs reached {pct(TARGET)} at seed 43**"
    + (f" (best: {pct(scored[0]['scores'][43])}, `{scored[0]['name']}`)" if scored else "")
    + (
        f"; under {multi[0]['n']} seeds the best mean is {pct(multi[0]['mean'])} ± {100 * multi[0]['sd']:.2f} "
        f"(`{multi[0]['name']}`), and {len(over_mean)} of the {len(multi)} re-scored designs average {pct(TARGET)} or more."
        if multi and multi[0]["sd"] is not None
        else "."
    ),
    "",
]
if multi:
    lines += [
        "Re-scored under several seeds (mean first):",
        "",
        "| design | what it is | params | MFLOPs | seeds | accuracy by seed | mean ± sd |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in multi:
        by_seed = ", ".join(f"{pct(r['scores'][s])} ({s})" for s in sorted(r["scores"]))
        lines.append(
            f"| `{r['name']}` | {description(r['name'])} | {r['params']:,} | {r['mflops']} | {r['n']} | {by_seed} | "
            f"**{pct(r['mean'])}** ± {100 * r['sd']:.2f} |"
        )
    lines.append("")
refs = [r for r in scored if r["name"] in CPU_REFERENCES]
if refs:
    lines += [
        "The hand-written references against their CPU figures (same recipe and seed, another device; "
        "the difference is the device's arithmetic, not the design):",
        "",
        "| reference | CPU | this device | difference |",
        "|---|---|---|---|",
    ]
    for r in sorted(refs, key=lambda r: r["name"]):
        cpu = CPU_REFERENCES[r["name"]]
        lines.append(f"| `{r['name'][4:]}` | {pct(cpu)} | {pct(r['scores'][43])} | {100 * (r['scores'][43] - cpu):+.2f} |")
    lines.append("")
lines += [
    "Every design at seed 43:",
    "",
    "| design | what it is | params | MFLOPs | accuracy | epoch s |",
    "|---|---|---|---|---|---|",
]
for r in scored:
    ep = f"{statistics.median(r['epoch_s']):.1f}" if r["epoch_s"] else ""
    lines.append(
        f"| `{r['name']}` | {description(r['name'])} | {r['params']:,} | {r['mflops']} | {pct(r['scores'][43])} | {ep} |"
    )
if failures:
    lines += ["", "Not scored:", ""] + [f"- {f}" for f in failures]
os.makedirs(out_dir, exist_ok=True)
open(os.path.join(out_dir, "ceiling-bench.md"), "w").write("\n".join(lines) + "\n")
json.dump({"machine": machine, "device": device, "designs": sorted(rows.values(), key=lambda r: r["name"]), "failures": failures},
          open(os.path.join(out_dir, "ceiling-bench.json"), "w"), indent=1, default=str)
print("\n".join(lines[:8]))
