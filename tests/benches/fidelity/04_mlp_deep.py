class Net(nn.Module):
    """A deeper MLP: 512-256-128 with ReLU."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        dims = [c * h * w, 512, 256, 128]
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        return self.head(self.body(x.flatten(1)))
