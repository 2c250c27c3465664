import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)

    def forward(self, x):
        y = self.fc(x.flatten(1))
        # log of a negative number: NaN from the first step, in TorchScript too.
        return y + torch.log(torch.zeros_like(y) - 1.0)
