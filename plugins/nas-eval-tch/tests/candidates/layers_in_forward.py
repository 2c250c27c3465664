import torch.nn as nn


class Net(nn.Module):
    """The embedded generator's residual block (a target run's iteration 13):
    layers bound to the network inside forward, new weights on every call."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[0], 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 14 * 14, num_classes)

    def forward(self, x):
        x = self.conv(x)
        self.conv_res = nn.Conv2d(8, 8, 3, padding=1)
        self.bn_res = nn.BatchNorm2d(8)
        x = x + self.bn_res(self.conv_res(x))
        return self.fc(self.pool(x).flatten(1))
