import torch
import torch.nn as nn
import torch.nn.functional as F

class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super(Net, self).__init__()
        C, H, W = in_shape
        self.conv1 = nn.Conv2d(C, 32, kernel_size=5, padding=2)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)

        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)

        self.fc1 = nn.Linear(1568, 256)  # Double the out_features of the first nn.Linear
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(256, num_classes)  # Double the in_features of the nn.Linear after it

        self.bn_fc = nn.BatchNorm1d(256)  # Apply batch normalization after the first nn.Linear

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu1(x)
        x = self.pool1(x)

        # Residual block
        self.conv_res = nn.Conv2d(32, 32, kernel_size=3, padding=1)
        self.bn_res = nn.BatchNorm2d(32)
        self.relu_res = nn.ReLU()

        # Add shortcut connection
        x = x + self.conv_res(x)

        # 2x2 pooling layer
        x = self.pool2(x)

        x = x.view(x.size(0), -1)
        x = self.fc1(x)
        x = self.bn_fc(x)  # Apply batch normalization after the first nn.Linear
        x = self.relu3(x)
        x = self.fc2(x)

        return x