# Prints one line of @MIB@ MiB from the scripted forward on the training
# worker's stdout, once, at the first test batch; the tail of that line stays
# in the stdio buffer, so the worker's own output lands on the same line. The
# host must stay bounded and still get the real answer.
from typing import List

import torch
import torch.nn as nn

CHUNK = "y" * (1 << 20)


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)
        self.register_buffer("printed", torch.zeros(1, dtype=torch.long))
        self.chunk = CHUNK
        self.mib = @MIB@

    def forward(self, x):
        if not self.training and int(self.printed[0]) == 0 and x.shape[0] > 2:
            self.printed[0] = 1
            parts: List[str] = [self.chunk] * self.mib
            print("".join(parts))
        return self.fc(x.flatten(1))
