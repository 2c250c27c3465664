class Net(nn.Module):
    """Wide 5x5 convolutions (24, 48) with average pooling, ELU, a 256-unit head."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.conv1 = nn.Conv2d(c, 24, 5, padding=2)
        self.conv2 = nn.Conv2d(24, 48, 5, padding=2)
        self.pool = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(48 * (h // 4) * (w // 4), 256)
        self.fc2 = nn.Linear(256, num_classes)

    def forward(self, x):
        x = self.pool(F.elu(self.conv1(x)))
        x = self.pool(F.elu(self.conv2(x)))
        x = F.elu(self.fc1(x.flatten(1)))
        return self.fc2(x)
