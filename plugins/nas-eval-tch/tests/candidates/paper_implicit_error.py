class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.conv = nn.Conv2d(c, 8, 3)
        self.fc = nn.Linear(8 * 30 * 30, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv(x))
        return self.fc(torch.flatten(x, 1))
