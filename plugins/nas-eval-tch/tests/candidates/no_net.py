import torch.nn as nn


class Model(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(10, num_classes)
