"""VGG-16 for 32x32 inputs (CIFAR): 13 conv3x3 + BatchNorm + ReLU, 5 max-pools, one Linear."""

from __future__ import annotations

import torch
from torch import nn

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    """VGG with BatchNorm; ``bias`` turns on conv/linear biases and BatchNorm affine."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        cfg: list = VGG16,
        bias: bool = False,
        width_mult: float = 1.0,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = max(1, round(v * width_mult))
            layers += [
                nn.Conv2d(c, out, 3, padding=1, bias=bias),
                nn.BatchNorm2d(out, affine=bias),
                nn.ReLU(inplace=True),
            ]
            c = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
