class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.conv = nn.Conv2d(c, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * (h // 2) * (w // 2), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.fc(torch.flatten(x, 1))
