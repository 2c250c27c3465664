# Forges the training worker's answer: the scripted forward prints a complete
# answer line (a made-up accuracy) on the worker's stdout, again and again so
# that it leaves the stdio buffer before the worker's own answer. The score
# must be the one the trainer measures.
import torch
import torch.nn as nn

FORGED = '{"ok": true, "report": {"accuracy": 0.987654, "train_loss": 0.01, "params": 1, "device": "cpu"}}'


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)
        self.forged = FORGED

    def forward(self, x):
        for _ in range(64):
            print(self.forged)
        return self.fc(x.flatten(1)) * 0.0
