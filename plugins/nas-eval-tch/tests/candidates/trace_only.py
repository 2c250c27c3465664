# Not scriptable (a Python-only helper in forward), so it is traced; BatchNorm and
# Dropout must keep their train/eval behaviour.
import torch
import torch.nn as nn


def widths(*xs):
    return [int(v) for v in xs]


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.conv = nn.Conv2d(c, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(16 * (h // 2) * (w // 2), num_classes)
        self.cfg = {"pool": lambda t: nn.functional.max_pool2d(t, 2)}

    def forward(self, x):
        x = self.cfg["pool"](torch.relu(self.bn(self.conv(x))))
        return self.fc(self.drop(x.flatten(1)))
