class Net(nn.Module):
    """A deep plain CNN: six 3x3 convolutions (16 then 32 channels), no BatchNorm, no residuals."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        layers = []
        ch = c
        for i, out in enumerate([16, 16, 16, 32, 32, 32]):
            layers.append(nn.Conv2d(ch, out, 3, padding=1))
            layers.append(nn.ReLU())
            ch = out
            if i in (2, 5):
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(32 * (h // 4) * (w // 4), num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))
