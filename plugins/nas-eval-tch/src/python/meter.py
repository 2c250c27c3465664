"""Measure exported TorchScript modules (a sandboxed child of eval.tch-one-epoch).

Usage: python meter.py

A persistent process that runs only exported TorchScript, never a
candidate's Python. Reads JSON requests on stdin, one per line:

  {"id": ..., "op": "flops", "model": PATH, "in_shape": [C, H, W]}

and answers each on descriptor 3 (never on stdout, which the measured code
can print to), one JSON line with the request's id:

  {"id": ..., "ok": true, "flops": N, "params": P}
      FLOPs of one image's forward pass in eval mode, trainable parameters
  {"id": ..., "ok": false, "error": ...}
"""

import json
import os
import sys

ANSWERS = os.fdopen(3, "w", buffering=1)

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

torch.set_num_threads(1)


def measure(req):
    model = torch.jit.load(req["model"], map_location="cpu")
    model.eval()
    x = torch.zeros(1, *[int(d) for d in req["in_shape"]])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"ok": True, "flops": int(counter.get_total_flops()), "params": int(params)}


for line in sys.stdin:
    if not line.strip():
        continue
    try:
        req = json.loads(line)
    except ValueError as e:
        ANSWERS.write(json.dumps({"ok": False, "error": f"bad request: {e}"}) + "\n")
        continue
    try:
        if req.get("op") != "flops":
            raise ValueError(f"unknown op {req.get('op')!r}")
        answer = measure(req)
    except BaseException as e:  # noqa: BLE001 - a module's error is its answer
        answer = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    answer["id"] = req.get("id")
    ANSWERS.write(json.dumps(answer) + "\n")
