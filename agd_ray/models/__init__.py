"""The paper's networks, built from a ModelConfig and the dataset's input/output sizes."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from torch import nn

from agd_ray.models.fcn import FCN
from agd_ray.models.gpt import GPT, GPTConfig
from agd_ray.models.resnet import imagenet_resnet50, preact_resnet18, preact_resnet50
from agd_ray.models.vgg import VGG

if TYPE_CHECKING:
    from agd_ray.config import ModelConfig
    from agd_ray.data import DataSpec

ARCHS = ("fcn", "vgg16", "resnet18", "resnet50", "gpt")

__all__ = ["ARCHS", "FCN", "GPT", "VGG", "GPTConfig", "build_model", "count_params"]


def build_model(cfg: ModelConfig, spec: DataSpec) -> nn.Module:
    """FCN / VGG-16 / pre-activation ResNet-18/50 (32x32), torchvision ResNet-50
    (ImageNet), GPT (text: ``spec.num_classes`` is the vocabulary)."""
    if cfg.arch == "gpt":
        if spec.context is None:
            raise ValueError(f"model.arch gpt needs text data, got {spec.name}")
        vocab = cfg.vocab or spec.num_classes
        return GPT(GPTConfig(cfg.depth, cfg.width, cfg.heads, cfg.context, vocab, cfg.bias))
    if spec.context is not None:
        raise ValueError(f"model.arch {cfg.arch} is an image model; {spec.name} is text")
    if cfg.arch == "fcn":
        return FCN(cfg.depth, cfg.width, math.prod(spec.input_shape), spec.num_classes, cfg.bias)
    if len(spec.input_shape) != 3:
        raise ValueError(f"model.arch {cfg.arch} needs image data (C, H, W), got {spec.name}")
    channels = spec.input_shape[0]
    if cfg.arch == "vgg16":
        return VGG(channels, spec.num_classes, bias=cfg.bias, width_mult=cfg.width / 64)
    if cfg.arch == "resnet18":
        return preact_resnet18(channels, spec.num_classes, cfg.bias, cfg.width)
    if cfg.arch == "resnet50":
        if spec.name == "imagenet":
            return imagenet_resnet50(spec.num_classes, cfg.bias)
        return preact_resnet50(channels, spec.num_classes, cfg.bias, cfg.width)
    raise ValueError(f"unknown model.arch {cfg.arch!r}; valid: {', '.join(ARCHS)}")


def count_params(model: nn.Module) -> int:
    """Number of trainable scalars (the paper's networks have weights only)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
