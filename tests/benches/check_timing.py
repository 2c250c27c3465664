"""Check time per candidate, cold vs warm (driven by benches/islands.rs).

Usage: python check_timing.py CHECK_PY WORK_DIR ROUNDS

Runs eval.tch-one-epoch's own checker (`check.py`: compile, import torch,
build the net, forward and backward on a dummy batch, TorchScript export and
reload) on a few small candidates, two ways, alternating:

- cold: a fresh `python -I check.py request.json` per candidate, as the
  evaluator's cold checker (`warm_checker = false`) starts it (this script
  does not add the sandbox: Landlock, namespaces and cgroups are set up
  around the same process);
- warm: one process that imported torch once, and a fork of it per
  candidate that runs the same `check.py` (what the evaluator's warm checker
  gives each candidate: a fresh child with torch already imported).

The same comparison through the evaluator itself, in the sandbox:
`cargo bench -p nas-eval-tch --bench check_bench` (docs/results/check-bench.md).

Also times a bare `python -I -c "import torch"`. Prints one JSON object.
"""

import json
import os
import runpy
import statistics
import subprocess
import sys
import time

CHECK, WORK, ROUNDS = sys.argv[1], sys.argv[2], int(sys.argv[3])

CANDIDATES = {
    "tiny-cnn": """
import torch.nn as nn
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.conv1 = nn.Conv2d(c, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * (h // 4) * (w // 4), num_classes)
    def forward(self, x):
        x = self.pool(self.conv1(x).relu())
        x = self.pool(self.conv2(x).relu())
        return self.fc(x.flatten(1))
""",
    "bn-dropout": """
import torch.nn as nn
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Dropout(0.25), nn.Linear(64 * (h // 4) * (w // 4), 128), nn.ReLU(),
                                  nn.Linear(128, num_classes))
    def forward(self, x):
        return self.head(self.features(x).flatten(1))
""",
    "mlp": """
import torch.nn as nn
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 256), nn.ReLU(), nn.Linear(256, num_classes))
    def forward(self, x):
        return self.net(x)
""",
}


def request(name):
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    code = os.path.join(d, "candidate.py")
    with open(code, "w") as f:
        f.write(CANDIDATES[name])
    req = os.path.join(d, "request.json")
    with open(req, "w") as f:
        json.dump({"code_path": code, "model_path": os.path.join(d, "model.pt"), "in_shape": [1, 28, 28],
                   "num_classes": 10, "seed": 43, "lr": 0.01, "momentum": 0.9, "batch_size": 128, "threads": 1}, f)
    return req


def read_answer(r):
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    return json.loads(data.decode().strip().splitlines()[-1])


def cold(req):
    r, w = os.pipe()
    # The checker answers on descriptor 3: hand it the pipe there.
    try:
        saved = os.dup(3)
    except OSError:
        saved = None
    t0 = time.perf_counter()
    os.dup2(w, 3)
    p = subprocess.Popen([sys.executable, "-I", CHECK, req], pass_fds=(3,),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if saved is None:
        os.close(3)
    else:
        os.dup2(saved, 3)
        os.close(saved)
    os.close(w)
    answer = read_answer(r)
    p.wait()
    return time.perf_counter() - t0, answer


def warm(req):
    r, w = os.pipe()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(w, 3)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        sys.argv = [CHECK, req]
        try:
            runpy.run_path(CHECK, run_name="__main__")
        except SystemExit:
            pass
        os._exit(0)
    os.close(w)
    answer = read_answer(r)
    os.waitpid(pid, 0)
    return time.perf_counter() - t0, answer


def main():
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-I", "-c", "import torch"], check=True)
    bare_import = [time.perf_counter() - t0]
    t0 = time.perf_counter()
    import torch  # noqa: F401 - the warm parent imports torch once

    parent_import = time.perf_counter() - t0
    reqs = {n: request(n) for n in CANDIDATES}
    rows = {n: {"cold": [], "warm": []} for n in CANDIDATES}
    for _ in range(ROUNDS):
        for n, req in reqs.items():
            s, a = cold(req)
            assert a.get("ok"), a
            rows[n]["cold"].append(s)
            s, a = warm(req)
            assert a.get("ok"), a
            rows[n]["warm"].append(s)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-c", "import torch"], check=True)
        bare_import.append(time.perf_counter() - t0)
    every_cold = [s for r in rows.values() for s in r["cold"]]
    every_warm = [s for r in rows.values() for s in r["warm"]]
    print(json.dumps({
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "bare_import_s": bare_import,
        "parent_import_s": parent_import,
        "rows": rows,
        "median_cold_s": statistics.median(every_cold),
        "median_warm_s": statistics.median(every_warm),
    }))


main()
