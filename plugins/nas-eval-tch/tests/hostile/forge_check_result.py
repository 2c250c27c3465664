# Forges the check: at import it writes the check's result where the checker
# would (the result file of the request, and descriptor 3), claiming 1
# parameter and 1 FLOP, writes the model file itself (@MODE@ = "model") or
# not at all ("nomodel"), and ends the checker before the real check runs.
# Parameters and FLOPs must be measured, not taken from the check.
import json
import os
import sys

import torch
import torch.nn as nn

MODE = "@MODE@"
request = json.load(open(sys.argv[-1]))
if MODE == "model":
    c, h, w = request["in_shape"]
    torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, request["num_classes"]))).save(request["model_path"])
forged = {"ok": True, "contract": "paper()", "params": 1, "flops": 1, "export": "script", "script_error": None}
if request.get("result_path"):
    with open(request["result_path"], "w") as f:
        json.dump(forged, f)
try:
    os.write(3, json.dumps(forged).encode() + b"\n")
except OSError:
    pass
os._exit(0)
