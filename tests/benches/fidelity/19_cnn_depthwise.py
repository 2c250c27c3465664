class Net(nn.Module):
    """Depthwise-separable convolutions (MobileNet style) with BatchNorm."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape

        def sep(cin, cout, stride):
            return nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
                nn.BatchNorm2d(cin),
                nn.ReLU6(),
                nn.Conv2d(cin, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU6(),
            )

        self.stem = nn.Sequential(nn.Conv2d(c, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.layers = nn.Sequential(sep(16, 32, 1), sep(32, 64, 2), sep(64, 64, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.pool(self.layers(self.stem(x)))
        return self.fc(x.flatten(1))
