class Net(nn.Module):
    """Conv-BN-ReLU blocks (32, 64) with max pooling, a linear head."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(64 * (h // 4) * (w // 4), num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))
