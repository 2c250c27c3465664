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

        self.conv3 = nn.Conv2d(64, 128, kernel_size=3, padding=1)  # Double the out_channels
        self.bn3 = nn.BatchNorm2d(128)
        self.relu3 = nn.ReLU()

        if self.bn3 is not None:  # Check if bn3 exists
            self.bn3 = nn.BatchNorm2d(128)  # If bn3 exists, double it's in_features

        self.conv4 = nn.Conv2d(128, 128, kernel_size=3, padding=1)  # Double the out_channels
        self.bn4 = nn.BatchNorm2d(128)
        self.relu4 = nn.ReLU()

        if self.bn4 is not None:  # Check if bn4 exists
            self.bn4 = nn.BatchNorm2d(128)  # If bn4 exists, double it's in_features

        self.conv5 = nn.Conv2d(128, 128, kernel_size=3, padding=1)  # Double the out_channels
        self.bn5 = nn.BatchNorm2d(128)
        self.relu5 = nn.ReLU()

        if self.bn5 is not None:  # Check if bn5 exists
            self.bn5 = nn.BatchNorm2d(128)  # If bn5 exists, double it's in_features

        self.conv6 = nn.Conv2d(128, 128, kernel_size=3, padding=1)  # Double the out_channels
        self.bn6 = nn.BatchNorm2d(128)
        self.relu6 = nn.ReLU()

        if self.bn6 is not None:  # Check if bn6 exists
            self.bn6 = nn.BatchNorm2d(128)  # If bn6 exists, double it's in_features

        self.conv7 = nn.Conv2d(128, 128, kernel_size=3, padding=1)  # Double the out_channels
        self.bn7 = nn.BatchNorm2d(128)
        self.relu7 = nn.ReLU()

        if self.bn7 is not None:  # Check if bn7 exists
            self.bn7 = nn.BatchNorm2d(128)  # If bn7 exists, double it's in_features

        self.conv8 = nn.Conv2d(128, 128, kernel_size=3, padding=1)  # Double the out_channels
        self.bn8 = nn.BatchNorm2d(128)
        self.relu8 = nn.ReLU()

        if self.bn8 is not None:  # Check if bn8 exists
            self.bn8 = nn.BatchNorm2d(128)  # If bn8 exists, double it's in_features

        self.conv9 = nn.Conv2d(128, 128, kernel_size=3, padding=1)  # Double the out_channels
        self.bn9 = nn.BatchNorm2d(128)
        self.relu9 = nn.ReLU()

        if self.bn9 is not None:  # Check if bn9 exists
            self.bn9 = nn.BatchNorm2d(128)  # If bn9 exists, double it's in_features

        self.fc1 = nn.Linear(128 * 7 * 7, 128)
        self.relu10 = nn.ReLU()
        self.fc2 = nn.Linear(128, num_classes)

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
        x = self.pool2(x)

        x = self.conv4(x)
        x = self.bn4(x)
        x = self.relu4(x)
        x = self.pool2(x)

        x = self.conv5(x)
        x = self.bn5(x)
        x = self.relu5(x)
        x = self.pool2(x)

        x = self.conv6(x)
        x = self.bn6(x)
        x = self.relu6(x)
        x = self.pool2(x)

        x = self.conv7(x)
        x = self.bn7(x)
        x = self.relu7(x)
        x = self.pool2(x)

        x = self.conv8(x)
        x = self.bn8(x)
        x = self.relu8(x)
        x = self.pool2(x)

        x = self.conv9(x)
        x = self.bn9(x)
        x = self.relu9(x)
        x = self.pool2(x)

        x = x.view(x.size(0), -1)
        x = self.fc1(x)
        x = self.relu10(x)
        x = self.fc2(x)
        return x