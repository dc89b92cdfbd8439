"""The paper's networks: shapes, no biases/affine by default, sizes from the dataset."""

import math

import pytest
import torch

from agd_ray.config import ModelConfig
from agd_ray.data import DataSpec
from agd_ray.models import FCN, build_model, count_params

MNIST1D = DataSpec("mnist1d", (40,), 10)
CIFAR10 = DataSpec("cifar10", (3, 32, 32), 10)
CIFAR100 = DataSpec("cifar100", (3, 32, 32), 100)


def _weights_only(model):
    return all(p.ndim >= 2 for p in model.parameters())


def test_fcn_depth_width_and_scaled_relu():
    model = build_model(ModelConfig(arch="fcn", depth=4, width=32), MNIST1D)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(32, 40), (32, 32), (32, 32), (10, 32)]
    assert _weights_only(model)
    assert count_params(model) == 32 * 40 + 2 * 32 * 32 + 10 * 32
    # the activation is relu * sqrt(2)
    act = model.net[2]
    x = torch.tensor([-1.0, 2.0])
    assert torch.allclose(act(x), torch.tensor([0.0, 2.0 * math.sqrt(2)]))


def test_fcn_depth_one_is_linear():
    model = FCN(1, 99, 40, 10)
    assert [tuple(p.shape) for p in model.parameters()] == [(10, 40)]


@pytest.mark.parametrize(
    "arch,spec,n_weights",
    [("vgg16", CIFAR100, 14), ("resnet18", CIFAR10, 21), ("resnet50", CIFAR10, 54)],
)
def test_cifar_models_forward_without_biases_or_affine(arch, spec, n_weights):
    model = build_model(ModelConfig(arch=arch, width=8), spec)
    assert _weights_only(model)
    assert sum(1 for _ in model.parameters()) == n_weights
    out = model(torch.randn(2, *spec.input_shape))
    assert out.shape == (2, spec.num_classes)


def test_bias_true_adds_biases_and_affine():
    model = build_model(ModelConfig(arch="resnet18", width=8, bias=True), CIFAR10)
    assert any(p.ndim == 1 for p in model.parameters())
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.affine for m in bns)


def test_imagenet_resnet50_is_torchvisions_without_affine():
    spec = DataSpec("imagenet", (3, 64, 64), 1000)
    model = build_model(ModelConfig(arch="resnet50"), spec)
    import torchvision

    assert isinstance(model, torchvision.models.ResNet)
    assert _weights_only(model)
    assert model.fc.bias is None
    model.eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
