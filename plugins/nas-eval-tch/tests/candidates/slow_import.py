# A valid network whose import takes a few seconds, saying when it started
# (a file `started` in its own directory): for killing the checker's parent
# while a check runs.
import os
import time

import torch.nn as nn

with open("started", "w") as f:
    f.write(str(os.getpid()))
time.sleep(float("@SECONDS@"))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.body(x)
