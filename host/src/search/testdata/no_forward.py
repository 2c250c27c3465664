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

        self.conv3 = nn.Conv2d(64, 128, kernel_size=3, padding=1)
        self.bn3 = nn.BatchNorm2d(128)
        self.relu3 = nn.ReLU()
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)

        self.conv4 = nn.Conv2d(128, 256, kernel_size=3, padding=1)
        self.bn4 = nn.BatchNorm2d(256)
        self.relu4 = nn.ReLU()
        self.pool4 = nn.MaxPool2d(kernel_size=2, stride=2)

        # New double out_channels for the last nn.Conv2d
        self.conv5 = nn.Conv2d(256, 2 * 256, kernel_size=3, padding=1)
        self.bn5 = nn.BatchNorm2d(2 * 256)
        self.relu5 = nn.ReLU()

        # Double in_features for the nn.Linear after the last nn.Conv2d
        self.fc1 = nn.Linear(512, 2 * 256)  # Changed from 1152 to 2 * 256 units
        self.bn_fc = nn.BatchNorm1d(2 * 256)  # Added a batch normalization layer after the first linear layer
        self.relu6 = nn.ReLU()
        self.fc2 = nn.Linear(2 * 256, num_classes)

        # Add dropout right before the first linear layer
        self.dropout = nn.Dropout(0.3)