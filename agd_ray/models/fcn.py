"""The paper's fully-connected network: depth Linear layers, ReLU scaled by sqrt(2)."""

from __future__ import annotations

import math

import torch
from torch import nn


class ScaledReLU(nn.Module):
    """ReLU(x) * sqrt(2): keeps the activations' scale through depth, as published."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * math.sqrt(2)


class FCN(nn.Module):
    """``depth`` weight layers (depth >= 1) of ``width`` units; input flattened.

    depth = 1 is a linear model; otherwise in_features -> width -> ... -> num_classes.
    """

    def __init__(
        self, depth: int, width: int, in_features: int, num_classes: int, bias: bool = False
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        sizes = [in_features] + [width] * (depth - 1) + [num_classes]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            if i > 0:
                layers.append(ScaledReLU())
            layers.append(nn.Linear(d_in, d_out, bias=bias))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
