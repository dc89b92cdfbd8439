"""Pre-activation ResNets for 32x32 inputs (He et al. 2016, "Identity Mappings"), and
torchvision's ResNet-50 for ImageNet. No biases / BatchNorm affine unless ``bias``."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int, bias: bool):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in, affine=bias)
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=bias)
        self.bn2 = nn.BatchNorm2d(planes, affine=bias)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=bias)
        self.shortcut = None
        if stride != 1 or c_in != planes:
            self.shortcut = nn.Conv2d(c_in, planes, 1, stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int, bias: bool):
        super().__init__()
        c_out = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(c_in, affine=bias)
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=bias)
        self.bn2 = nn.BatchNorm2d(planes, affine=bias)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=bias)
        self.bn3 = nn.BatchNorm2d(planes, affine=bias)
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=bias)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """Pre-activation ResNet for CIFAR-sized inputs: conv3x3 stem, four stages, BN-ReLU head."""

    def __init__(
        self,
        block: type[PreActBlock] | type[PreActBottleneck],
        num_blocks: list[int],
        in_channels: int,
        num_classes: int,
        bias: bool = False,
        width: int = 64,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=bias)
        stages, c = [], width
        for i, n in enumerate(num_blocks):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(c, planes, stride=2 if (i > 0 and j == 0) else 1, bias=bias))
                c = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(c, affine=bias)
        self.linear = nn.Linear(c, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def preact_resnet18(in_channels: int, num_classes: int, bias: bool = False, width: int = 64):
    return PreActResNet(PreActBlock, [2, 2, 2, 2], in_channels, num_classes, bias, width)


def preact_resnet50(in_channels: int, num_classes: int, bias: bool = False, width: int = 64):
    return PreActResNet(PreActBottleneck, [3, 4, 6, 3], in_channels, num_classes, bias, width)


def imagenet_resnet50(num_classes: int = 1000, bias: bool = False) -> nn.Module:
    """torchvision's ResNet-50. Without ``bias``: no fc bias and no BatchNorm affine.

    torchvision's constructor initialises BatchNorm weights, so it is built with
    affine BatchNorm and each BatchNorm is then swapped for a non-affine one.
    """
    import torchvision  # slow to import; only the ImageNet model needs it

    model = torchvision.models.resnet50(weights=None, num_classes=num_classes)
    if not bias:
        model.fc = nn.Linear(model.fc.in_features, num_classes, bias=False)
        _drop_batchnorm_affine(model)
    return model


def _drop_batchnorm_affine(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.BatchNorm2d(child.num_features, affine=False))
        else:
            _drop_batchnorm_affine(child)
