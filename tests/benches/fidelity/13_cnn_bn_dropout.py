class Net(nn.Module):
    """Conv-BN-ReLU (16, 48) with Dropout2d, then a 256-unit head with dropout."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.c1 = nn.Conv2d(c, 16, 3, padding=1)
        self.b1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 48, 3, padding=1)
        self.b2 = nn.BatchNorm2d(48)
        self.drop2d = nn.Dropout2d(0.1)
        self.fc1 = nn.Linear(48 * (h // 4) * (w // 4), 256)
        self.drop = nn.Dropout(0.4)
        self.fc2 = nn.Linear(256, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
        x = self.drop2d(F.max_pool2d(F.relu(self.b2(self.c2(x))), 2))
        x = self.drop(F.relu(self.fc1(torch.flatten(x, 1))))
        return self.fc2(x)
