#!/usr/bin/env python3
"""LoRA fine-tuning of a GGUF base model: the trainer behind `tune.lora`.

Written out and started by the `tune.lora` plugin (crate `nas-tune-lora`),
one process per fine-tune, never inside the host. It reads the job the plugin
wrote (`job.json`), and:

1. loads the base model and its tokenizer from the very GGUF file that
   `llm.local` serves (transformers, `gguf_file=`, dequantised to float32),
   through a cache of the dequantised weights keyed by the file's sha256
   (the first load of a GGUF takes a minute, a cached one seconds); a
   transformers model directory is read as it is;
2. reads the training set (JSONL, one `{"messages": [...], "answer": ...}`
   per line), applies the model's chat template, and takes the loss on the
   answer's tokens only (the end-of-turn token included);
3. trains a LoRA adapter with peft on the chosen projections, AdamW,
   deterministically under the seed (initialisation, data order, dropout);
4. commits a checkpoint (adapter weights, optimiser, step, RNG states, loss
   curve) every `checkpoint_every` steps, atomically; started again on the
   same job and output directory it continues from the last one;
5. writes a PEFT adapter (`peft/adapter_model.safetensors` +
   `adapter_config.json`, for transformers and vLLM), a GGUF LoRA adapter
   (`adapter.gguf`, for llama.cpp) and `adapter.json` (the record).

Progress goes to standard output as JSON lines (`{"event": "step", ...}`);
everything else (library messages, tracebacks) goes to standard error.

    tune_lora.py train JOB.json
    tune_lora.py score JOB.json [--adapter PEFT_DIR]

Exit status: 0 done; 2 a named failure (an `error` event says which);
3 out of memory; anything else a crash (the traceback is on stderr).
"""

import hashlib
import json
import math
import os
import random
import shutil
import sys
import time

# Before torch is imported: deterministic cuBLAS, no hub access, no bars.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Events go to the original standard output (and to trainer/progress.jsonl);
# anything a library prints there goes to standard error instead.
_EVENTS = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr

# Architectures whose GGUF tensors are the transformers weights unpermuted
# (llama-family GGUFs permute q/k for RoPE, which a LoRA would have to follow).
SUPPORTED_ARCHS = ("qwen2",)
ROLES = ("system", "user", "assistant")
CACHE_FORMAT = 1


class Failure(Exception):
    """A failure with a name the plugin maps to a typed error."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


_PROGRESS = []


def emit(event, **fields):
    line = json.dumps({"event": event, **fields}, separators=(",", ":")) + "\n"
    _EVENTS.write(line)
    _EVENTS.flush()
    for f in _PROGRESS:
        f.write(line)
        f.flush()


def log_progress_to(path):
    """Also append every event to `path` (one file across attempts)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _PROGRESS.append(open(path, "a", buffering=1))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path, value):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


# ---------------------------------------------------------------- the job


def read_job(path):
    with open(path) as f:
        job = json.load(f)
    s = job["settings"]
    t = job["trainer"]
    for key in ("rank", "alpha", "dropout", "target_modules", "learning_rate", "batch_size", "max_seq_len", "seed"):
        if s.get(key) is None:
            raise Failure("bad_settings", f"setting `{key}` is missing from the job")
    if s.get("max_steps") is None and s.get("epochs") is None:
        raise Failure("bad_settings", "neither `max_steps` nor `epochs` is set")
    t.setdefault("micro_batch", 1)
    t.setdefault("checkpoint_every", 50)
    return job


def read_examples(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise Failure("train_set", f"cannot read the training set {path}: {e.strerror or e}")
    examples = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise Failure("train_set", f"{where}: not a JSON object: {e}")
        if not isinstance(obj, dict):
            raise Failure("train_set", f"{where}: not a JSON object")
        messages, answer = obj.get("messages"), obj.get("answer")
        if not isinstance(messages, list) or not messages:
            raise Failure("train_set", f"{where}: `messages` must be a non-empty list")
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise Failure("train_set", f"{where}: each message needs a `role` ({'/'.join(ROLES)}) and a `content` string")
        if not isinstance(answer, str) or not answer:
            raise Failure("train_set", f"{where}: `answer` must be a non-empty string")
        examples.append({"messages": [{"role": m["role"], "content": m["content"]} for m in messages], "answer": answer})
    if not examples:
        raise Failure("train_set", f"the training set {path} holds no examples")
    return examples, hashlib.sha256(raw).hexdigest()


def fingerprint(job, train_sha, init_sha):
    """What decides the result: a checkpoint or adapter made under another
    fingerprint is not resumed or reused."""
    t = job["trainer"]
    key = {
        "format": 1,
        "base_sha256": job["base"]["sha256"],
        "train_set_sha256": train_sha,
        "init_adapter_sha256": init_sha,
        "settings": job["settings"],
        "trainer": {k: t.get(k) for k in ("micro_batch", "warmup_ratio", "lr_schedule", "weight_decay", "max_grad_norm", "dtype")},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def init_adapter_sha(path):
    if not path:
        return None
    f = os.path.join(path, "adapter_model.safetensors")
    if not os.path.isfile(f):
        raise Failure("init_adapter", f"the adapter to continue from has no {f}")
    return sha256_file(f)


def total_steps(settings, n):
    if settings.get("max_steps") is not None:
        return max(1, int(settings["max_steps"]))
    return max(1, math.ceil(float(settings["epochs"]) * n / int(settings["batch_size"])))


# ---------------------------------------------------------------- model


def pick_device(torch, wanted):
    if wanted in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise Failure("device", f"device `{wanted}` asked for, but torch sees no CUDA device")
    return wanted


def pick_dtype(torch, wanted, device):
    if wanted in (None, "", "auto"):
        wanted = "bfloat16" if device.startswith("cuda") else "float32"
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if wanted not in table:
        raise Failure("bad_settings", f"dtype `{wanted}` is not one of {', '.join(table)}")
    return wanted, table[wanted]


def load_base(job, torch, dtype):
    """The base model and tokenizer: dequantised from a GGUF file (through
    the cache), or read from a transformers directory as it is."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = job["base"]["path"]
    sha = job["base"]["sha256"]
    if os.path.isdir(path):
        return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if not os.path.isfile(path):
        raise Failure("base_missing", f"the base model {path} does not exist")
    cache_root = job["trainer"].get("cache_dir")
    src_dir, src_file = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    if not cache_root:
        tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=src_file)
        model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=src_file, dtype=torch.float32)
        _drop_gguf_quantizer(model)
        return tok, model.to(dtype)
    cache = os.path.join(cache_root, f"{sha}-v{CACHE_FORMAT}")
    if not os.path.isfile(os.path.join(cache, "COMPLETE")):
        started = time.time()
        emit("cache", state="building", dir=cache)
        tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=src_file)
        model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=src_file, dtype=torch.float32)
        _drop_gguf_quantizer(model)
        _write_cache(cache, tok, model, path, sha)
        del model
        emit("cache", state="built", dir=cache, seconds=round(time.time() - started, 2))
    tok = AutoTokenizer.from_pretrained(cache)
    model = AutoModelForCausalLM.from_pretrained(cache, dtype=dtype)
    return tok, model


def _drop_gguf_quantizer(model):
    # The weights are dequantised; what remains of the GGUF quantiser only
    # stops the model from being saved or reloaded as plain weights.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            try:
                setattr(model, attr, None)
            except AttributeError:
                pass
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass


def _write_cache(cache, tok, model, path, sha):
    from safetensors.torch import save_model

    parent = os.path.dirname(cache)
    os.makedirs(parent, exist_ok=True)
    tmp = f"{cache}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    model.config.save_pretrained(tmp)
    # save_model drops the duplicate of tied weights; loading ties them again.
    save_model(model, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"}, force_contiguous=True)
    tok.save_pretrained(tmp)
    with open(os.path.join(tmp, "COMPLETE"), "w") as f:
        json.dump({"source": os.path.abspath(path), "sha256": sha, "format": CACHE_FORMAT}, f)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.rename(tmp, cache)
    except OSError:
        # Another trainer finished the same cache first.
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(parent)


# ---------------------------------------------------------------- data


def encode(tok, ex, max_len):
    """Prompt and answer token ids, the answer ending at the end-of-turn
    token; cut from the left of the prompt to fit `max_len`."""
    msgs = ex["messages"]
    prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": ex["answer"]}], tokenize=False)
    eos = tok.eos_token or ""
    if full.startswith(prompt):
        answer = full[len(prompt):]
        cut = answer.rfind(eos) if eos else -1
        if cut >= 0:
            answer = answer[: cut + len(eos)]
    else:
        answer = ex["answer"] + eos
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    a = tok(answer, add_special_tokens=False)["input_ids"]
    truncated = False
    if len(p) + len(a) > max_len:
        truncated = True
        if len(a) < max_len:
            p = p[len(p) - (max_len - len(a)):]
        else:
            keep_p = min(len(p), max_len // 2)
            p = p[len(p) - keep_p:] if keep_p else []
            a = a[: max_len - len(p)]
    return {"ids": p + a, "answer_start": len(p), "truncated": truncated}


class Order:
    """The example order of each epoch, a pure function of the seed."""

    def __init__(self, n, seed):
        self.n, self.seed, self.cache = n, seed, {}

    def batch(self, step, size):
        import numpy as np

        out = []
        for g in range((step - 1) * size, step * size):
            epoch, pos = divmod(g, self.n)
            if epoch not in self.cache:
                self.cache = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
            out.append(int(self.cache[epoch][pos]))
        return out


def micro_batches(encoded, idxs, size, pad_id, torch, device):
    for i in range(0, len(idxs), size):
        chunk = [encoded[j] for j in idxs[i:i + size]]
        width = max(len(e["ids"]) for e in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        rows, cols = [], []
        for r, e in enumerate(chunk):
            n = len(e["ids"])
            ids[r, :n] = torch.tensor(e["ids"], dtype=torch.long)
            mask[r, :n] = 1
            # The hidden state at t-1 predicts token t of the answer.
            for t in range(max(e["answer_start"], 1), n):
                rows.append(r)
                cols.append(t)
        rows = torch.tensor(rows, dtype=torch.long)
        cols = torch.tensor(cols, dtype=torch.long)
        yield ids.to(device), mask.to(device), rows.to(device), cols.to(device), int(mask.sum())


def answer_nll(model, ids, mask, rows, cols, torch):
    """Summed negative log-likelihood of the answer tokens (logits only at
    the answer positions: the vocabulary projection is the largest layer)."""
    import torch.nn.functional as F

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = inner.model(input_ids=ids, attention_mask=mask).last_hidden_state
    logits = inner.lm_head(hidden[rows, cols - 1]).float()
    return F.cross_entropy(logits, ids[rows, cols], reduction="sum")


# ---------------------------------------------------------------- LoRA


def lora_model(base, job, torch):
    from peft import LoraConfig, PeftModel, get_peft_model

    s = job["settings"]
    init = job.get("init_adapter")
    torch.manual_seed(int(s["seed"]))
    if init:
        try:
            return PeftModel.from_pretrained(base, init, is_trainable=True)
        except (OSError, ValueError) as e:
            raise Failure("init_adapter", f"cannot continue from the adapter {init}: {e}")
    cfg = LoraConfig(
        r=int(s["rank"]),
        lora_alpha=float(s["alpha"]),
        lora_dropout=float(s["dropout"]),
        target_modules=list(s["target_modules"]),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(base, cfg)
    except ValueError as e:
        raise Failure("bad_settings", f"LoRA settings do not fit the model: {e}")


def lr_at(step, total, job):
    t, base_lr = job["trainer"], float(job["settings"]["learning_rate"])
    warmup = int(round(float(t.get("warmup_ratio", 0.0)) * total))
    if warmup and step <= warmup:
        return base_lr * step / warmup
    sched = t.get("lr_schedule", "constant")
    if sched == "constant" or total <= warmup:
        return base_lr
    frac = (step - warmup) / max(1, total - warmup)
    if sched == "linear":
        return base_lr * max(0.0, 1.0 - frac)
    if sched == "cosine":
        return base_lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))
    raise Failure("bad_settings", f"lr_schedule `{sched}` is not one of constant, linear, cosine")


# ---------------------------------------------------------------- checkpoints


def rng_state(torch):
    import numpy as np

    st = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (st[0], st[1].tolist(), st[2], st[3], st[4]),
        "python": random.getstate(),
    }


def set_rng_state(torch, st):
    import numpy as np

    torch.set_rng_state(st["torch"])
    if st["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
    n = st["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    random.setstate(st["python"])


def save_checkpoint(ckdir, model, opt, state, torch):
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    os.makedirs(ckdir, exist_ok=True)
    final = os.path.join(ckdir, f"step-{state['step']:08d}")
    tmp = f"{final}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    weights = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(weights, os.path.join(tmp, "adapter.safetensors"))
    torch.save(opt.state_dict(), os.path.join(tmp, "optimizer.pt"))
    torch.save(rng_state(torch), os.path.join(tmp, "rng.pt"))
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump(state, f)
    for name in os.listdir(tmp):
        with open(os.path.join(tmp, name), "rb") as f:
            os.fsync(f.fileno())
    fsync_dir(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    fsync_dir(ckdir)
    # Only the newest committed checkpoint is needed.
    for name in os.listdir(ckdir):
        p = os.path.join(ckdir, name)
        if p != final:
            shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(ckdir, fp):
    """The newest committed checkpoint of this job; checkpoints of another
    job and unfinished ones are removed."""
    if not os.path.isdir(ckdir):
        return None
    best = None
    for name in sorted(os.listdir(ckdir)):
        p = os.path.join(ckdir, name)
        ok = False
        if name.startswith("step-") and ".tmp-" not in name:
            try:
                with open(os.path.join(p, "state.json")) as f:
                    st = json.load(f)
                ok = st.get("fingerprint") == fp and all(
                    os.path.isfile(os.path.join(p, x)) for x in ("adapter.safetensors", "optimizer.pt", "rng.pt")
                )
            except (OSError, ValueError):
                ok = False
        if ok and (best is None or st["step"] > best[1]["step"]):
            best = (p, st)
        elif not ok:
            emit("discard", path=p)
            shutil.rmtree(p, ignore_errors=True)
    return best


def load_checkpoint(path, model, opt, torch, device):
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(os.path.join(path, "adapter.safetensors"), device=str(device)))
    opt.load_state_dict(torch.load(os.path.join(path, "optimizer.pt"), map_location=device, weights_only=False))
    set_rng_state(torch, torch.load(os.path.join(path, "rng.pt"), weights_only=False))


# ---------------------------------------------------------------- outputs


def write_gguf(path, model, arch, alpha_for_gguf, job, torch):
    """A GGUF LoRA adapter as llama.cpp reads it: `general.type=adapter`,
    `adapter.type=lora`, `adapter.lora.alpha`, and per adapted weight
    `blk.N.<name>.weight.lora_a` (PEFT's A, [rank, in]) and `.lora_b`
    (PEFT's B, [out, rank]), named by gguf's own tensor map."""
    import gguf
    import numpy as np
    from peft import get_peft_model_state_dict

    arch_id = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch]
    n_layers = model.get_base_model().config.num_hidden_layers
    names = gguf.get_tensor_name_map(arch_id, n_layers)
    pairs = {}
    for key, value in get_peft_model_state_dict(model).items():
        base = key.replace("base_model.model.", "", 1)
        for part, tag in ((".lora_A.weight", "a"), (".lora_B.weight", "b")):
            if base.endswith(part):
                pairs.setdefault(base[: -len(part)] + ".weight", {})[tag] = value
                break
        else:
            raise Failure("unsupported", f"the adapter holds `{key}`, which is not a LoRA A or B weight")
    tmp = f"{path}.tmp-{os.getpid()}"
    w = gguf.GGUFWriter(tmp, arch=arch)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha_for_gguf))
    w.add_name(f"{job['base'].get('name') or 'base'} LoRA {job['job_id']}")
    w.add_string("nas.base_sha256", job["base"]["sha256"])
    for hf_name in sorted(pairs, key=_layer_order):
        ab = pairs[hf_name]
        gg = names.get_name(hf_name, try_suffixes=(".weight",))
        if gg is None:
            raise Failure("unsupported", f"llama.cpp has no tensor for `{hf_name}` in a {arch} model")
        for tag in ("a", "b"):
            arr = ab[tag].detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
            w.add_tensor(f"{gg}.lora_{tag}", np.ascontiguousarray(arr))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _layer_order(name):
    parts = name.split(".")
    for i, p in enumerate(parts):
        if p == "layers" and i + 1 < len(parts) and parts[i + 1].isdigit():
            return (int(parts[i + 1]), name)
    return (-1, name)


def write_peft(out_dir, model, job):
    final = os.path.join(out_dir, "peft")
    tmp = f"{final}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    cfg = model.peft_config["default"]
    cfg.base_model_name_or_path = job["base"].get("name") or os.path.basename(job["base"]["path"])
    model.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    fsync_dir(out_dir)
    return final


def gguf_alpha(model):
    """The alpha llama.cpp needs for PEFT's scale (it scales by alpha / rank)."""
    cfg = model.peft_config["default"]
    if getattr(cfg, "rank_pattern", None) or getattr(cfg, "alpha_pattern", None):
        raise Failure("unsupported", "per-module ranks or alphas cannot be written as one GGUF alpha")
    alpha, r = float(cfg.lora_alpha), int(cfg.r)
    return alpha * math.sqrt(r) if getattr(cfg, "use_rslora", False) else alpha


def versions():
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for p in ("torch", "transformers", "peft", "gguf", "safetensors", "accelerate"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


# ---------------------------------------------------------------- train


def train(job_path):
    job = read_job(job_path)
    out_dir = job["out_dir"]
    os.makedirs(out_dir, exist_ok=True)
    log_progress_to(os.path.join(out_dir, "trainer", "progress.jsonl"))
    examples, train_sha = read_examples(job["train_set"])
    fp = fingerprint(job, train_sha, init_adapter_sha(job.get("init_adapter")))
    record_path = os.path.join(out_dir, "adapter.json")
    done = _finished(record_path, fp)
    if done is not None:
        emit("done", reused=True, adapter=done)
        return

    import numpy as np
    import torch

    t = job["trainer"]
    s = job["settings"]
    if t.get("threads"):
        torch.set_num_threads(int(t["threads"]))
    torch.use_deterministic_algorithms(True, warn_only=True)
    seed = int(s["seed"])
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    device = pick_device(torch, t.get("device"))
    dtype_name, dtype = pick_dtype(torch, t.get("dtype"), device)

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    load_started = time.time()
    tok, base = load_base(job, torch, dtype)
    arch = base.config.model_type
    if arch not in SUPPORTED_ARCHS:
        raise Failure("unsupported", f"the base model is a `{arch}` model; supported: {', '.join(SUPPORTED_ARCHS)}")
    if getattr(base.config, "use_cache", None):
        base.config.use_cache = False
    base.to(device)
    model = lora_model(base, job, torch)
    if t.get("gradient_checkpointing"):
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    load_seconds = time.time() - load_started

    max_len = int(s["max_seq_len"])
    encoded = [encode(tok, ex, max_len) for ex in examples]
    truncated = sum(e["truncated"] for e in encoded)
    n = len(encoded)
    batch = int(s["batch_size"])
    total = total_steps(s, n)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(s["learning_rate"]), weight_decay=float(t.get("weight_decay", 0.0)))
    ckdir = os.path.join(out_dir, "checkpoints")
    st = {"step": 0, "tokens": 0, "answer_tokens": 0, "seconds": 0.0, "loss_curve": [], "resumed_from": []}
    found = latest_checkpoint(ckdir, fp)
    if found is not None:
        path, saved = found
        load_checkpoint(path, model, opt, torch, device)
        st = {k: saved[k] for k in st}
        st["resumed_from"] = st["resumed_from"] + [saved["step"]]
        emit("resume", step=saved["step"], tokens=saved["tokens"], checkpoint=path)
    emit(
        "start",
        job_id=job["job_id"],
        examples=n,
        truncated=truncated,
        steps=total,
        start_step=st["step"],
        device=device,
        dtype=dtype_name,
        threads=torch.get_num_threads(),
        trainable_params=sum(p.numel() for p in params),
        params=sum(p.numel() for p in model.parameters()),
        load_seconds=round(load_seconds, 2),
    )

    order = Order(n, seed)
    micro = max(1, int(t["micro_batch"]))
    every = max(1, int(t["checkpoint_every"]))
    max_norm = float(t.get("max_grad_norm", 1.0))
    model.train()
    attempt_started = time.time()
    base_seconds = st["seconds"]
    for step in range(st["step"] + 1, total + 1):
        step_started = time.time()
        idxs = order.batch(step, batch)
        n_answer = sum(max(0, len(encoded[j]["ids"]) - max(encoded[j]["answer_start"], 1)) for j in idxs)
        opt.zero_grad(set_to_none=True)
        loss_sum, step_tokens = 0.0, 0
        try:
            for ids, mask, rows, cols, n_tok in micro_batches(encoded, idxs, micro, pad_id, torch, device):
                nll = answer_nll(model, ids, mask, rows, cols, torch)
                (nll / max(1, n_answer)).backward()
                loss_sum += float(nll.detach())
                step_tokens += n_tok
            if max_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, max_norm)
            lr = lr_at(step, total, job)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.step()
        except torch.OutOfMemoryError as e:
            raise Failure("out_of_memory", f"out of memory at step {step} on {device}: {str(e).splitlines()[0]}")
        loss = loss_sum / max(1, n_answer)
        if not math.isfinite(loss):
            raise Failure("non_finite", f"the loss is {loss} at step {step}; lower the learning rate")
        st["step"] = step
        st["tokens"] += step_tokens
        st["answer_tokens"] += n_answer
        st["seconds"] = base_seconds + (time.time() - attempt_started)
        st["loss_curve"].append({"step": step, "loss": loss, "tokens": st["tokens"]})
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.time() - step_started
        cuda_peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
        emit(
            "step",
            step=step,
            steps=total,
            loss=loss,
            tokens=st["tokens"],
            step_tokens=step_tokens,
            answer_tokens=n_answer,
            lr=lr,
            seconds=round(dt, 4),
            tokens_per_s=round(step_tokens / dt, 2) if dt > 0 else None,
            **({"cuda_peak_bytes": cuda_peak} if cuda_peak is not None else {}),
        )
        if step % every == 0 and step < total:
            save_checkpoint(ckdir, model, opt, {**st, "fingerprint": fp}, torch)
            emit("checkpoint", step=step)

    peft_dir = write_peft(out_dir, model, job)
    gguf_path = None
    if t.get("write_gguf", True):
        gguf_path = os.path.join(out_dir, "adapter.gguf")
        write_gguf(gguf_path, model, arch, gguf_alpha(model), job, torch)
    cfg = model.peft_config["default"]
    record = {
        "dir": os.path.abspath(out_dir),
        "gguf": os.path.abspath(gguf_path) if gguf_path else None,
        "peft_dir": os.path.abspath(peft_dir),
        "base_sha256": job["base"]["sha256"],
        "loss_curve": st["loss_curve"],
        "steps": st["step"],
        "examples": n,
        "tokens_seen": st["tokens"],
        "seconds": round(st["seconds"], 3),
        "settings": {
            **s,
            "rank": int(cfg.r),
            "alpha": float(cfg.lora_alpha),
            "target_modules": sorted(cfg.target_modules) if cfg.target_modules else s["target_modules"],
        },
        "extra": {
            "fingerprint": fp,
            "train_set_sha256": train_sha,
            "answer_tokens": st["answer_tokens"],
            "truncated_examples": truncated,
            "resumed_from": st["resumed_from"],
            "device": device,
            "dtype": dtype_name,
            "threads": torch.get_num_threads(),
            "architecture": arch,
            "base": job["base"],
            "init_adapter": job.get("init_adapter"),
            "trainer": {k: t.get(k) for k in ("micro_batch", "warmup_ratio", "lr_schedule", "weight_decay", "max_grad_norm", "checkpoint_every", "gradient_checkpointing")},
            "versions": versions(),
        },
    }
    record = {k: v for k, v in record.items() if v is not None}
    write_json_atomic(record_path, record)
    if not t.get("keep_checkpoints"):
        shutil.rmtree(ckdir, ignore_errors=True)
    emit("done", reused=False, adapter=record)


def _finished(record_path, fp):
    try:
        with open(record_path) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    if rec.get("extra", {}).get("fingerprint") != fp:
        return None
    files = [rec.get("peft_dir") and os.path.join(rec["peft_dir"], "adapter_model.safetensors"), rec.get("gguf")]
    if not all(os.path.isfile(f) for f in files if f):
        return None
    return rec


# ---------------------------------------------------------------- score


def score(job_path, adapter_dir):
    """Mean negative log-likelihood of the training answers under the base
    and (with `--adapter`) under a PEFT adapter loaded back with peft."""
    job = read_job(job_path)
    examples, _ = read_examples(job["train_set"])
    import torch

    t = job["trainer"]
    if t.get("threads"):
        torch.set_num_threads(int(t["threads"]))
    device = pick_device(torch, t.get("device"))
    _, dtype = pick_dtype(torch, t.get("dtype"), device)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tok, base = load_base(job, torch, dtype)
    base.to(device).eval()
    max_len = int(job["settings"]["max_seq_len"])
    encoded = [encode(tok, ex, max_len) for ex in examples]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    idxs = list(range(len(encoded)))
    n_answer = sum(len(e["ids"]) - max(e["answer_start"], 1) for e in encoded)

    def mean_nll(model):
        total = 0.0
        with torch.no_grad():
            for ids, mask, rows, cols, _ in micro_batches(encoded, idxs, 1, pad_id, torch, device):
                total += float(answer_nll(model, ids, mask, rows, cols, torch))
        return total / max(1, n_answer)

    out = {"answer_tokens": n_answer, "base_nll": mean_nll(base)}
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, adapter_dir).eval()
        out["adapter_nll"] = mean_nll(model)
        out["adapter_rank"] = int(model.peft_config["default"].r)
    emit("score", **out)


def main(argv):
    if len(argv) < 3 or argv[1] not in ("train", "score"):
        print(__doc__, file=sys.stderr)
        return 64
    try:
        if argv[1] == "train":
            train(argv[2])
        else:
            adapter = argv[argv.index("--adapter") + 1] if "--adapter" in argv else None
            score(argv[2], adapter)
    except Failure as e:
        emit("error", kind=e.kind, message=e.message)
        return 3 if e.kind == "out_of_memory" else 2
    except MemoryError as e:
        emit("error", kind="out_of_memory", message=f"out of host memory: {e}")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
