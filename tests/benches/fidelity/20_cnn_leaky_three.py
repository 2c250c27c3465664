class Net(nn.Module):
    """Three conv layers (16, 32, 64) with LeakyReLU and max pooling, a dropout head."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.convs = nn.ModuleList([
            nn.Conv2d(c, 16, 3, padding=1),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.Conv2d(32, 64, 3, padding=1),
        ])
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(64 * (h // 8) * (w // 8), 128),
            nn.LeakyReLU(0.1),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        for conv in self.convs:
            x = F.max_pool2d(F.leaky_relu(conv(x), 0.1), 2)
        return self.head(x)
