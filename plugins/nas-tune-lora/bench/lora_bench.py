#!/usr/bin/env python3
"""LoRA training throughput of tune.lora's trainer (tokens/s, seconds per step).

Runs the real trainer (`src/python/tune_lora.py train JOB`) on a synthetic
training set whose examples are exactly `--seq-len` tokens long, reads its
progress events, and prints a Markdown table (append it to a results file
with `--out`). Each model is either a GGUF file (what `llm.local` serves;
dequantised through the trainer's cache) or a synthetic model: the
Qwen2.5-Coder architecture of that size with random weights (the throughput
does not depend on the values), for machines that cannot get the weights.

    lora_bench.py --model 0.5b=/path/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf \\
        --device cpu --seq-len 256 --batch 1 --steps 4 --out results.md
    lora_bench.py --synthetic 0.5b --synthetic 1.5b --tokenizer DIR --device cuda \\
        --seq-len 1024 --batch 8 --micro-batch 8 --steps 8 --out results.md

The first `--warmup` steps of each run are not counted.
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINER = os.path.join(HERE, "..", "src", "python", "tune_lora.py")

# Qwen2.5-Coder-*-Instruct architectures (config.json of the released models).
ARCHS = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, tie_word_embeddings=True),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, tie_word_embeddings=True),
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, tie_word_embeddings=False),
}

CODE = '''import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        c = in_shape[1]
        self.features = nn.Sequential(
            nn.Conv2d(c, 64, kernel_size=3, padding=1), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, kernel_size=3, padding=1), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(prm["dropout"]), nn.LazyLinear(out_shape[0]))

    def forward(self, x):
        return self.classifier(self.features(x))
'''


def synthetic_model(size, tokenizer_dir, root, device):
    """A transformers directory: the architecture of `size`, random weights
    (bfloat16), the tokenizer files of `tokenizer_dir`."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    out = os.path.join(root, f"synthetic-{size}")
    if os.path.isfile(os.path.join(out, "config.json")):
        return out
    cfg = Qwen2Config(vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                      bos_token_id=151643, eos_token_id=151645, **ARCHS[size])
    torch.manual_seed(0)
    with torch.device(device if device.startswith("cuda") else "cpu"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(out)
    for name in os.listdir(tokenizer_dir):
        if name.startswith(("tokenizer", "chat_template", "special_tokens", "vocab", "merges")):
            shutil.copy(os.path.join(tokenizer_dir, name), out)
    del model
    return out


def write_train_set(path, n, seq_len):
    system = "You write PyTorch models in the Net(in_shape, out_shape, prm, device) contract. Answer with code only."
    # Long enough to fill the sequence; the trainer cuts it to `seq_len` tokens.
    answer = CODE * max(1, seq_len // 150 + 1)
    with open(path, "w") as f:
        for i in range(n):
            msgs = [{"role": "system", "content": system},
                    {"role": "user", "content": f"Write a CNN for 32x32 colour images, {10 + i} classes."}]
            f.write(json.dumps({"messages": msgs, "answer": answer}) + "\n")


def run_one(python, label, base_path, sha, args, work):
    out_dir = os.path.join(work, f"out-{label}")
    train = os.path.join(work, "train.jsonl")
    steps = args.warmup + args.steps
    write_train_set(train, max(args.batch * steps, 4), args.seq_len)
    job = {
        "job_id": f"bench-{label}",
        "base": {"name": label, "path": base_path, "sha256": sha},
        "train_set": train,
        "out_dir": out_dir,
        "init_adapter": None,
        "settings": {"rank": args.rank, "alpha": 2.0 * args.rank, "dropout": 0.05,
                     "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                     "epochs": None, "max_steps": steps, "learning_rate": 2e-4, "batch_size": args.batch,
                     "max_seq_len": args.seq_len, "seed": 42},
        "trainer": {"device": args.device, "dtype": args.dtype, "threads": args.threads,
                    "checkpoint_every": 1000000, "keep_checkpoints": False, "cache_dir": args.cache_dir,
                    "micro_batch": args.micro_batch, "warmup_ratio": 0.0, "lr_schedule": "constant",
                    "weight_decay": 0.0, "max_grad_norm": 1.0,
                    "gradient_checkpointing": args.gradient_checkpointing, "write_gguf": False},
    }
    os.makedirs(out_dir, exist_ok=True)
    job_path = os.path.join(work, f"job-{label}.json")
    with open(job_path, "w") as f:
        json.dump(job, f)
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")
    threads = args.threads or os.cpu_count() or 1
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if args.device == "cpu" and "OMP_WAIT_POLICY" not in os.environ and busy(threads):
        # As the plugin does: spin-waiting threads on shared cores slow a step several times.
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    started = time.time()
    proc = subprocess.Popen([python, TRAINER, "train", job_path], stdout=subprocess.PIPE, env=env, text=True)
    events = []
    for line in proc.stdout:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        events.append(ev)
        if ev.get("event") in ("step", "start", "cache", "error"):
            print(f"[{label}] {line.strip()}", file=sys.stderr, flush=True)
    rc = proc.wait()
    wall = time.time() - started
    err = [e for e in events if e.get("event") == "error"]
    if rc != 0 or err:
        raise RuntimeError(f"the trainer failed (status {rc}): {err[0]['message'] if err else 'see its output above'}")
    start = next(e for e in events if e.get("event") == "start")
    built = sum(e.get("seconds", 0.0) for e in events if e.get("event") == "cache" and e.get("state") == "built")
    measured = [e for e in events if e.get("event") == "step" and e["step"] > args.warmup]
    secs = [e["seconds"] for e in measured]
    toks = sum(e["step_tokens"] for e in measured)
    peak = max((e.get("cuda_peak_bytes") or 0 for e in measured), default=0)
    return {
        "model": label,
        "params": start.get("params"),
        "trainable": start["trainable_params"],
        "device": start["device"],
        "dtype": start["dtype"],
        "threads": start["threads"],
        "omp_wait_policy": env.get("OMP_WAIT_POLICY", "default"),
        "load_s": start["load_seconds"] - built,
        "dequantise_s": built,
        "s_per_step": statistics.median(secs),
        "tokens_per_s": toks / sum(secs),
        "tokens_per_step": toks / len(measured),
        "steps": len(measured),
        "wall_s": wall,
        "peak_gib": peak / 2**30 if peak else None,
        "losses": [round(e["loss"], 4) for e in events if e.get("event") == "step"],
    }


def attempt(label, fn):
    """One model's run; a failure (out of memory, say) becomes its row."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - reported in the table
        print(f"[{label}] failed: {e}", file=sys.stderr, flush=True)
        return {"model": label, "error": str(e).splitlines()[0][:200]}


def busy(threads):
    try:
        load = float(open("/proc/loadavg").read().split()[0])
    except (OSError, ValueError):
        return False
    return load + threads > (os.cpu_count() or 1) + 0.5


def machine(device):
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    out = f"{cpu}, {os.cpu_count()} cores"
    if device.startswith("cuda"):
        import torch

        out = f"{torch.cuda.get_device_name(0)}; {out}"
    try:
        load = open("/proc/loadavg").read().split()[:3]
        out += f"; load average at start {' '.join(load)}"
    except OSError:
        pass
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], help="LABEL=PATH of a GGUF file (or a transformers directory)")
    ap.add_argument("--synthetic", action="append", default=[], choices=sorted(ARCHS), help="a random-weight model of this size")
    ap.add_argument("--tokenizer", help="tokenizer files for --synthetic (a transformers directory)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3, help="measured steps")
    ap.add_argument("--warmup", type=int, default=1, help="steps not counted")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--cache-dir", default=None, help="the trainer's cache of dequantised GGUF models")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--out", default=None, help="append the Markdown section to this file")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="lora-bench-")
    os.makedirs(work, exist_ok=True)
    runs = []
    for spec in args.model:
        label, path = spec.split("=", 1)
        sha = None
        if os.path.isfile(path):
            import hashlib

            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            sha = h.hexdigest()
        runs.append(attempt(label, lambda: run_one(args.python, label, os.path.abspath(path), sha or "dir", args, work)))
    for size in args.synthetic:
        if not args.tokenizer:
            raise SystemExit("--synthetic needs --tokenizer")
        label = f"{size} (random weights)"

        def one(size=size, label=label):
            d = synthetic_model(size, args.tokenizer, work, args.device)
            return run_one(args.python, label, d, f"synthetic-{size}", args, work)

        runs.append(attempt(label, one))

    repo = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
    home = os.path.expanduser("~")
    argv = [os.path.relpath(os.path.abspath(sys.argv[0]), repo)] + sys.argv[1:]
    cmd = " ".join(shlex.quote(a).replace(home, "~") for a in argv)
    title = args.title or f"{args.device}, sequence {args.seq_len}, batch {args.batch}"
    lines = [
        f"### {title}",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine(args.device)}.",
        f"LoRA rank {args.rank} on q/k/v/o/gate/up/down, AdamW; every example {args.seq_len} tokens, "
        f"{args.batch} per step ({args.micro_batch} per forward pass); median of {args.steps} steps after {args.warmup} not counted.",
        "",
        "```",
        cmd,
        "```",
        "",
        "| model | device | dtype | threads | trainable params | tokens/step | s/step | tokens/s | peak GPU memory | base load (s) | GGUF dequantised (once, s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error']} | | | | | | | | | |")
            continue
        peak = f"{r['peak_gib']:.1f} GiB" if r["peak_gib"] else "–"
        once = f"{r['dequantise_s']:.0f}" if r["dequantise_s"] else "cached"
        lines.append(
            f"| {r['model']} | {r['device']} | {r['dtype']} | {r['threads']} | {r['trainable'] / 1e6:.1f} M | "
            f"{r['tokens_per_step']:.0f} | {r['s_per_step']:.3f} | {r['tokens_per_s']:.1f} | {peak} | "
            f"{r['load_s']:.1f} | {once} |"
        )
    lines.append("")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")
    json.dump(runs, sys.stderr, indent=1)
    print(file=sys.stderr)


if __name__ == "__main__":
    main()
