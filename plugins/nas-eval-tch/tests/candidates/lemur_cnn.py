import torch
import torch.nn as nn


def supported_hyperparameters():
    return {"lr", "momentum", "dropout"}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        c, h, w = in_shape[1], in_shape[2], in_shape[3]
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Dropout(prm["dropout"]), nn.Linear(64 * (h // 4) * (w // 4), out_shape[0]))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))

    def train_setup(self, prm):
        pass
