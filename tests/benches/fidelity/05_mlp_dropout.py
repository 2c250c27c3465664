class Net(nn.Module):
    """MLP with heavy dropout: 512 -> 256, p = 0.5 after each."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.fc1 = nn.Linear(c * h * w, 512)
        self.drop1 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(512, 256)
        self.drop2 = nn.Dropout(0.5)
        self.fc3 = nn.Linear(256, num_classes)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = self.drop1(F.relu(self.fc1(x)))
        x = self.drop2(F.relu(self.fc2(x)))
        return self.fc3(x)
