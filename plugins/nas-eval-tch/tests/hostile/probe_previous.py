# Looks for what a candidate checked before it by the same warm checker may
# have left (see tamper_next.py); fails the check if it finds any, else is a
# small valid network.
import ctypes
import os
import sys

import torch
import torch.nn as nn

MARK = "@MARK@"
seen = []
for name, module in [("torch", torch), ("json", sys.modules.get("json"))]:
    if getattr(module, "TAMPERED", None):
        seen.append(f"{name}.TAMPERED")
if os.environ.get("NAS_TAMPERED"):
    seen.append("NAS_TAMPERED in the environment")
try:
    torch.nn.Linear(2, 2)(torch.zeros(1, 2))
except RuntimeError as e:
    seen.append(f"Linear.forward: {e}")
parent = os.path.dirname(os.getcwd())
for path in [
    os.path.join(parent, f"planted-{MARK}"),
    os.path.join(parent, f"cand-next-{MARK}"),
    f"/tmp/planted-{MARK}",
    f"/dev/shm/planted-{MARK}",
    os.path.join(os.path.dirname(torch.__file__), f"planted_{MARK}.py"),
]:
    if os.path.exists(path):
        seen.append(path)
others = sorted(int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (os.getpid(), os.getppid()))
if others:
    seen.append(f"other processes {others}")
if ctypes.CDLL(None, use_errno=True).shmget(0x4E4153, 4096, 0) >= 0:
    seen.append("a System V shared memory segment")
if seen:
    raise RuntimeError("left by an earlier candidate: " + ", ".join(seen))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.body(x)
