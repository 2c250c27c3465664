import torch
import torch.nn as nn
import torch.nn.functional as F

class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super(Net, self).__init__()
        C, H, W = in_shape
        self.conv1 = nn.Conv2d(C, 64, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)

        self.conv2 = nn.Conv2d(64, 128, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(128)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)

        self.conv3 = nn.Conv2d(128, 256, kernel_size=3, padding=1)
        self.bn3 = nn.BatchNorm2d(256)
        self.relu3 = nn.ReLU()
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)

        self.conv4 = nn.Conv2d(256, 512, kernel_size=3, padding=1)
        self.bn4 = nn.BatchNorm2d(512)
        self.relu4 = nn.ReLU()
        self.pool4 = nn.MaxPool2d(kernel_size=2, stride=2)

        # New double out_channels for the last nn.Conv2d
        self.conv5 = nn.Conv2d(512, 2 * 512, kernel_size=3, padding=1)
        self.bn5 = nn.BatchNorm2d(2 * 512)
        self.relu5 = nn.ReLU()

        # Add dropout before the classifier
        self.dropout = nn.Dropout(0.2)

        # New double in_features for the nn.Linear after the last nn.Conv2d
        self.fc1 = nn.Linear(1024, 2 * 512)  # Changed from 2048 to 1024 units
        self.bn_fc = nn.BatchNorm1d(2 * 512)  # Added a batch normalization layer after the first linear layer
        self.relu6 = nn.ReLU()
        self.fc2 = nn.Linear(2 * 512, num_classes)

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
        x = self.pool3(x)

        x = self.conv4(x)
        x = self.bn4(x)
        x = self.relu4(x)
        x = self.pool4(x)

        x = self.conv5(x)
        x = self.bn5(x)
        x = self.relu5(x)

        x = x.view(x.size(0), -1)
        x = self.dropout(x)  # Apply dropout
        x = self.bn_fc(x)
        x = self.relu6(x)
        x = self.fc2(x)
        return x
