"""The eager PyTorch baseline of the evaluator benchmark.

Trains one reference model for one epoch with the evaluator's recipe (SGD lr
0.01, momentum 0.9, weight decay 5e-4, batch 128, seed 43, cross-entropy,
per-channel normalisation; crop + flip for 32x32 colour data), the prepared
dataset resident on the device as uint8 tensors, and prints one JSON line:
{"epoch_seconds", "accuracy", "train_loss", "total_seconds"}.

Usage: python eager.py MODEL.py DATASET_DIR MAX_TRAIN MAX_TEST DEVICE
"""

import importlib.util
import json
import struct
import sys
import time

T0 = time.perf_counter()
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

model_path, data_dir, max_train, max_test, device = sys.argv[1:6]
max_train, max_test = int(max_train), int(max_test)
dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))


def load_split(path, limit):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]

    def tensor(name, dtype):
        info = header[name]
        a, b = info["data_offsets"]
        return torch.from_numpy(np.frombuffer(body[a:b], dtype=dtype).reshape(info["shape"]).copy())

    x, y = tensor("images", np.uint8), tensor("labels", np.int64)
    return x[:limit].to(dev), y[:limit].to(dev)


manifest = json.load(open(f"{data_dir}/manifest.json"))
train_x, train_y = load_split(f"{data_dir}/{manifest['splits']['train']['file']}", max_train)
test_x, test_y = load_split(f"{data_dir}/{manifest['splits']['test']['file']}", max_test)
C, H, W = manifest["input_shape"]
mean = torch.tensor(manifest["mean"], device=dev).view(1, C, 1, 1)
std = torch.tensor(manifest["std"], device=dev).view(1, C, 1, 1)
augment = (C, H, W) == (3, 32, 32)

torch.manual_seed(43)
spec = importlib.util.spec_from_file_location("m", model_path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
model = mod.Net((C, H, W), manifest["num_classes"]).to(dev)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)


def norm(x):
    return (x.float() / 255.0 - mean) / std


def crop_flip(x):
    b = x.shape[0]
    p = F.pad(x, (4, 4, 4, 4))
    oy = torch.randint(0, 9, (b, 1), device=dev)
    ox = torch.randint(0, 9, (b, 1), device=dev)
    flip = torch.randint(0, 2, (b, 1), device=dev).bool()
    ar_h = torch.arange(H, device=dev).view(1, H)
    ar_w = torch.arange(W, device=dev).view(1, W)
    cols = torch.where(flip, (W - 1 - ar_w) + ox, ar_w + ox)
    rows = ar_h + oy
    return p[torch.arange(b, device=dev).view(b, 1, 1, 1), torch.arange(C, device=dev).view(1, C, 1, 1), rows.view(b, 1, H, 1), cols.view(b, 1, 1, W)]


if dev.type == "cuda":
    torch.cuda.synchronize()
t = time.perf_counter()
model.train()
n = train_x.shape[0]
perm = torch.randperm(n, device=dev)
loss_sum = torch.zeros((), device=dev)
for s in range(0, n, 128):
    idx = perm[s : s + 128]
    x = train_x[idx]
    if augment:
        x = crop_flip(x)
    out = model(norm(x))
    loss = F.cross_entropy(out, train_y[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    loss_sum += loss.detach() * idx.shape[0]
if dev.type == "cuda":
    torch.cuda.synchronize()
epoch = time.perf_counter() - t
model.eval()
correct = 0
with torch.no_grad():
    for s in range(0, test_x.shape[0], 512):
        correct += (model(norm(test_x[s : s + 512])).argmax(-1) == test_y[s : s + 512]).sum().item()
print(json.dumps({
    "epoch_seconds": epoch,
    "accuracy": correct / test_x.shape[0],
    "train_loss": loss_sum.item() / n,
    "total_seconds": time.perf_counter() - T0,
    "device": str(dev),
    "threads": torch.get_num_threads(),
}))
