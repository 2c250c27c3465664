# Reads the held-out labels while it is being scored: in eval mode the
# scripted forward maps the prepared test split (@TEST_SPLIT@, a safetensors
# file whose first tensor is the int64 labels) with torch.from_file and
# answers each test batch with the labels at a running position. The
# trainer must not be able to read them.
import torch
import torch.nn as nn
import torch.nn.functional as F

PATH = "@TEST_SPLIT@"
N_TEST = @N_TEST@


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)
        self.register_buffer("pos", torch.zeros(1, dtype=torch.long))
        self.path = PATH
        self.n_test = N_TEST
        self.num_classes = num_classes

    def forward(self, x):
        if self.training:
            return self.fc(x.flatten(1))
        head = torch.from_file(self.path, shared=False, size=8, dtype=torch.uint8)
        n = 0
        for i in range(8):
            n += int(head[i]) << (8 * i)
        raw = torch.from_file(self.path, shared=False, size=8 + n + 8 * self.n_test, dtype=torch.uint8)
        # little-endian int64 labels below 256: their first byte
        labels = raw[8 + n:].reshape(self.n_test, 8)[:, 0].long()
        p = int(self.pos[0])
        b = x.shape[0]
        self.pos[0] += b
        y = labels[p:p + b]
        return F.one_hot(y, self.num_classes).float() * 100.0 + self.fc(x.flatten(1)) * 0.0
