# Knows the test labels in order (@LABELS@, put in by the test: a candidate
# that learnt them elsewhere) and answers each test batch in eval mode with
# the labels at a running position. Only the order of the test examples,
# unknown to the candidate, stops this.
import torch
import torch.nn as nn
import torch.nn.functional as F

LABELS = [@LABELS@]


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)
        self.register_buffer("labels", torch.tensor(LABELS, dtype=torch.long))
        self.register_buffer("pos", torch.zeros(1, dtype=torch.long))
        self.num_classes = num_classes

    def forward(self, x):
        if self.training:
            return self.fc(x.flatten(1))
        p = int(self.pos[0])
        b = x.shape[0]
        self.pos[0] += b
        y = self.labels[p:p + b]
        return F.one_hot(y, self.num_classes).float() * 100.0 + self.fc(x.flatten(1)) * 0.0
