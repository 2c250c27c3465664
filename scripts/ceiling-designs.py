"""Writes the hand-built designs of the one-epoch ceiling study.

    python scripts/ceiling-designs.py OUT_DIR [--max-mflops 200]

A grid of conventional image classifiers for 1x28x28 inputs and 10 classes:
plain conv-BN-ReLU stacks of several depths and widths with max or average
pooling, four heads (a linear layer, global average pooling, and a 256- or
512-wide hidden layer with batch norm and dropout), 5x5 first kernels, SiLU,
and small ResNets. Each design is one file in the candidate contract (`class
Net(nn.Module)` with `__init__(self, in_shape, num_classes)`), named by what it
is, with that description in its first line. Designs over the FLOPs budget
(counted with torch's FlopCounterMode on one 1x28x28 example, as the
evaluator counts them) are left out; `designs.json` lists what was written
with each design's parameters and MFLOPs.
"""

import argparse
import json
import os

import torch
from torch.utils.flop_counter import FlopCounterMode

HEADER = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n"


def plain(stages, head, act="nn.ReLU(inplace=True)", pool="nn.MaxPool2d(2)", first_kernel=3):
    """stages: (width, convs, pool after) triples. head: linear | gap | fcN."""
    lines = [
        "class Net(nn.Module):",
        "    def __init__(self, in_shape, num_classes):",
        "        super().__init__()",
        "        C, H, W = in_shape",
        "        layers = []",
        "        c = C",
    ]
    pools = 0
    first = True
    for width, convs, pool_after in stages:
        for _ in range(convs):
            k = first_kernel if first else 3
            lines.append(
                f"        layers += [nn.Conv2d(c, {width}, {k}, padding={k // 2}), nn.BatchNorm2d({width}), {act}]"
            )
            lines.append(f"        c = {width}")
            first = False
        if pool_after:
            lines.append(f"        layers.append({pool})")
            pools += 1
    lines.append("        self.features = nn.Sequential(*layers)")
    size = f"c * (H // {2 ** pools}) * (W // {2 ** pools})"
    if head == "linear":
        lines.append(f"        self.head = nn.Sequential(nn.Flatten(), nn.Linear({size}, num_classes))")
    elif head == "gap":
        lines.append("        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))")
    else:
        n = int(head[2:])
        lines.append(
            f"        self.head = nn.Sequential(nn.Flatten(), nn.Linear({size}, {n}), nn.BatchNorm1d({n}), "
            f"{act}, nn.Dropout(0.3), nn.Linear({n}, num_classes))"
        )
    lines += ["", "    def forward(self, x):", "        return self.head(self.features(x))", ""]
    return "\n".join(lines)


def resnet(widths, head):
    """A stem convolution and one basic block per width, each after the first halving the size."""
    lines = [
        "class Block(nn.Module):",
        "    def __init__(self, i, o, stride):",
        "        super().__init__()",
        "        self.c1 = nn.Conv2d(i, o, 3, stride, 1, bias=False)",
        "        self.b1 = nn.BatchNorm2d(o)",
        "        self.c2 = nn.Conv2d(o, o, 3, 1, 1, bias=False)",
        "        self.b2 = nn.BatchNorm2d(o)",
        "        self.skip = nn.Sequential() if stride == 1 and i == o else "
        "nn.Sequential(nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o))",
        "",
        "    def forward(self, x):",
        "        y = F.relu(self.b1(self.c1(x)))",
        "        return F.relu(self.b2(self.c2(y)) + self.skip(x))",
        "",
        "",
        "class Net(nn.Module):",
        "    def __init__(self, in_shape, num_classes):",
        "        super().__init__()",
        "        C, H, W = in_shape",
        f"        self.stem = nn.Sequential(nn.Conv2d(C, {widths[0]}, 3, padding=1, bias=False), "
        f"nn.BatchNorm2d({widths[0]}), nn.ReLU(inplace=True))",
    ]
    blocks = []
    prev = widths[0]
    for i, w in enumerate(widths):
        blocks.append(f"Block({prev}, {w}, {1 if i == 0 else 2})")
        prev = w
    lines.append(f"        self.blocks = nn.Sequential({', '.join(blocks)})")
    halvings = len(widths) - 1
    if head == "gap":
        lines.append(f"        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear({prev}, num_classes))")
    else:
        n = int(head[2:])
        size = f"{prev} * (H // {2 ** halvings}) * (W // {2 ** halvings})"
        lines.append(
            f"        self.head = nn.Sequential(nn.Flatten(), nn.Linear({size}, {n}), nn.BatchNorm1d({n}), "
            f"nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear({n}, num_classes))"
        )
    lines += ["", "    def forward(self, x):", "        return self.head(self.blocks(self.stem(x)))", ""]
    return "\n".join(lines)


def grid():
    """(name, description, source) of every design, budget not yet applied."""
    stacks = {
        "32-64": [(32, 1, True), (64, 1, True)],
        "32x2-64x2": [(32, 2, True), (64, 2, True)],
        "64-128": [(64, 1, True), (128, 1, True)],
        "64x2-128x2": [(64, 2, True), (128, 2, True)],
        "96-192": [(96, 1, True), (192, 1, True)],
        "32-64p-128p": [(32, 1, False), (64, 1, True), (128, 1, True)],
        "32-64-128": [(32, 1, True), (64, 1, True), (128, 1, True)],
        "48-96-192": [(48, 1, True), (96, 1, True), (192, 1, True)],
        "64-128-256": [(64, 1, True), (128, 1, True), (256, 1, True)],
        "32x2-64x2-128x2": [(32, 2, True), (64, 2, True), (128, 2, True)],
        "32-64p-128x2p": [(32, 1, False), (64, 1, True), (128, 2, True)],
        "64-96p-128p": [(64, 1, False), (96, 1, True), (128, 1, True)],
        "64x2-128x2-256": [(64, 2, True), (128, 2, True), (256, 1, True)],
        "48x2-96x2-192x2": [(48, 2, True), (96, 2, True), (192, 2, True)],
    }
    out = []
    for name, stages in stacks.items():
        for head in ("linear", "gap", "fc256", "fc512"):
            desc = f"conv-BN-ReLU {name} (p: max pool after), {head} head"
            out.append((f"cnn-{name}-{head}", desc, plain(stages, head)))
    for name in ("32-64p-128p", "64-128", "32x2-64x2"):
        for head in ("fc256", "fc512"):
            out.append(
                (f"cnn-{name}-{head}-k5", f"conv-BN-ReLU {name}, 5x5 first kernel, {head} head",
                 plain(stacks[name], head, first_kernel=5))
            )
            out.append(
                (f"cnn-{name}-{head}-silu", f"conv-BN-SiLU {name}, {head} head",
                 plain(stacks[name], head, act="nn.SiLU(inplace=True)"))
            )
            out.append(
                (f"cnn-{name}-{head}-avgpool", f"conv-BN-ReLU {name} with average pooling, {head} head",
                 plain(stacks[name], head, pool="nn.AvgPool2d(2)"))
            )
    for widths in ((32, 64), (32, 64, 128), (64, 128)):
        for head in ("gap", "fc256"):
            name = "-".join(map(str, widths))
            out.append((f"resnet-{name}-{head}", f"ResNet: stem and one basic block per width {name}, {head} head",
                        resnet(widths, head)))
    return out


def measure(source):
    scope = {}
    exec(compile(source, "<design>", "exec"), scope)
    net = scope["Net"]((1, 28, 28), 10).eval()
    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = net(torch.zeros(1, 1, 28, 28))
    assert tuple(out.shape) == (1, 10), out.shape
    return params, counter.get_total_flops()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--max-mflops", type=float, default=200.0)
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    written = []
    for name, desc, body in grid():
        source = f"# {desc}\n" + HEADER + body
        params, flops = measure(source)
        if flops > args.max_mflops * 1e6:
            continue
        with open(os.path.join(args.out_dir, f"{name}.py"), "w") as f:
            f.write(source)
        written.append({"name": name, "description": desc, "params": params, "mflops": round(flops / 1e6, 1)})
    with open(os.path.join(args.out_dir, "designs.json"), "w") as f:
        json.dump(written, f, indent=1)
    print(f"{len(written)} designs of at most {args.max_mflops:g} MFLOPs in {args.out_dir}")


if __name__ == "__main__":
    main()
