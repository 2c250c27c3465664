class Net(nn.Module):
    """No pooling: strided 3x3 convolutions (16 -> 32 -> 64) downsample."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.conv1 = nn.Conv2d(c, 16, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        fh, fw = (h + 7) // 8, (w + 7) // 8
        self.fc = nn.Linear(64 * fh * fw, num_classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return self.fc(x.flatten(1))
