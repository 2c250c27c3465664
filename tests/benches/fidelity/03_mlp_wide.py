class Net(nn.Module):
    """A wide MLP: one hidden layer of 1024 units."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 1024), nn.ReLU())
        self.out = nn.Linear(1024, num_classes)

    def forward(self, x):
        return self.out(self.hidden(x))
