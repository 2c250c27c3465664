class Net(nn.Module):
    """Three-layer MLP with sigmoid activations (slow to start at lr 0.01)."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.l1 = nn.Linear(c * h * w, 300)
        self.l2 = nn.Linear(300, 100)
        self.l3 = nn.Linear(100, num_classes)

    def forward(self, x):
        x = torch.sigmoid(self.l1(x.view(x.size(0), -1)))
        x = torch.sigmoid(self.l2(x))
        return self.l3(x)
