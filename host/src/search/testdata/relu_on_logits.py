import torch
import torch.nn as nn
import torch.nn.functional as F

class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super(Net, self).__init__()
        C, H, W = in_shape
        self.conv1 = nn.Conv2d(C, 32, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)

        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)

        self.conv3 = nn.Conv2d(64, 1024, kernel_size=3, padding=1)  # Double the out_channels of the last nn.Conv2d
        self.bn3 = nn.BatchNorm2d(1024)  # Apply batch normalization after the last nn.Conv2d
        self.relu3 = nn.ReLU()

        self.fc1 = nn.Linear(50176, 512)  # Double the out_features of the first nn.Linear
        self.bn_fc = nn.BatchNorm1d(512)  # Apply batch normalization after the first nn.Linear
        self.relu4 = nn.ReLU()
        self.fc2 = nn.Linear(512, 10)  # New classifier head with 10 classes
        self.relu5 = nn.ReLU()  # Apply a final ReLU activation

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu1(x)
        x = self.pool1(x)

        x = self.conv2(x)
        x = self.bn2(x)
        x = self.relu2(x)
        x = self.pool2(x)

        x = self.conv3(x)
        x = self.bn3(x)
        x = self.relu3(x)

        x = x.view(x.size(0), -1)
        x = self.fc1(x)
        x = self.bn_fc(x)  # Apply batch normalization after the first nn.Linear
        x = self.relu4(x)
        x = self.fc2(x)
        x = self.relu5(x)

        return x