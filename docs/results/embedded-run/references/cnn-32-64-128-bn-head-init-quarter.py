import torch
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        C, H, W = in_shape
        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))
        self.features = nn.Sequential(
            block(C, 32), block(32, 64), nn.MaxPool2d(2),
            block(64, 128), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(128 * (H // 4) * (W // 4), 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(512, num_classes))

        # Convolutions and the hidden linear sit before a batch norm, which
        # undoes their scale: smaller weights make their effective step larger.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not self.head[-1]:
                m.weight.data.mul_(0.25)

    def forward(self, x):
        return self.head(self.features(x))
