class Net(nn.Module):
    """A narrow MLP: one hidden layer of 64 units."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.fc1 = nn.Linear(c * h * w, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)
