"""The optimizer family beyond the paper: parameter roles from the module structure,
AGD with biases and gains, spectral AGD, the curvature-rescaled step, torch.compile
and bf16. (The fast AGD step against the rule written plainly: tests/test_agd.py.)"""

import copy
import math

import pytest
import torch
from torch import nn

from agd_ray.models import FCN
from agd_ray.models.resnet import preact_resnet18
from agd_ray.optim import (
    AGD,
    AGDSpectral,
    CurvatureStep,
    orthogonal_init_,
    parameter_roles,
    scale,
)
from agd_ray.optim.spectral import orthogonalise


def test_from_model_without_extras_is_the_paper():
    torch.manual_seed(1)
    a = orthogonal_init_(FCN(3, 32, 10, 4))
    b = FCN(3, 32, 10, 4)
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 10)
    opts = AGD(a.parameters()), AGD.from_model(b)
    for model, opt in zip((a, b), opts, strict=True):
        model(x).square().mean().backward()
        opt.step()
    assert float(opts[0].eta) == float(opts[1].eta)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_preact_resnet_roles_tie_each_batchnorm_to_the_convolution_it_normalises():
    model = preact_resnet18(3, 10, bias=True, width=8)
    roles = parameter_roles(model)
    assert len(roles) == sum(1 for _ in model.parameters())  # every parameter has a role
    assert roles["conv1.weight"] == ("weight", "conv1")
    assert roles["conv1.bias"] == ("bias", "conv1")
    for stage in range(4):
        for block in range(2):
            b = f"layers.{stage}.{block}"
            # bn1 -> relu -> conv1 (and the shortcut: the main branch wins)
            assert roles[f"{b}.bn1.weight"] == ("gain", f"{b}.conv1")
            assert roles[f"{b}.bn1.bias"] == ("shift", f"{b}.conv1")
            # bn2 -> relu -> conv2, not conv1 (the convolution registered before it)
            assert roles[f"{b}.bn2.weight"] == ("gain", f"{b}.conv2")
            assert roles[f"{b}.bn2.bias"] == ("shift", f"{b}.conv2")
    assert roles["layers.1.0.shortcut.bias"] == ("bias", "layers.1.0.shortcut")
    assert roles["bn.weight"] == ("gain", "linear")  # the head's BN feeds the classifier
    # depth counts weight layers only
    opt = AGD.from_model(model)
    assert opt.depth == sum(1 for p in model.parameters() if p.ndim > 1)


class ReversedBlock(nn.Module):
    """A pre-activation block whose modules are registered in the reverse of their
    data flow: roles must follow the flow, not the registration order."""

    def __init__(self):
        super().__init__()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)

    def forward(self, x):
        out = self.conv1(torch.relu(self.bn1(x)))
        return x + self.conv2(torch.relu(self.bn2(out)))


def test_roles_follow_data_flow_not_registration_order():
    roles = parameter_roles(ReversedBlock())
    assert roles["bn1.weight"] == ("gain", "conv1")
    assert roles["bn2.weight"] == ("gain", "conv2")


def test_post_norm_last_batchnorm_belongs_to_the_conv_it_normalises():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    roles = parameter_roles(model)
    assert roles["layer1.0.bn1.weight"] == ("gain", "layer1.0.conv2")  # bn1 -> relu -> conv2
    assert roles["layer1.0.bn2.weight"] == ("gain", "layer1.0.conv2")  # bn2 -> + : its producer
    assert roles["layer2.0.downsample.1.weight"] == ("gain", "layer2.0.downsample.0")
    assert roles["bn1.weight"] == ("gain", "layer1.0.conv1")  # stem: main branch, not shortcut


def test_extras_update_rule_by_hand():
    # One Linear(2 -> 2) with bias: W's grad norm 5, s = 1; bias grad norm 2, s_b = sqrt(2).
    layer = nn.Linear(2, 2)
    W0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    layer.weight.grad = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    layer.bias.grad = torch.tensor([0.0, 2.0])
    opt = AGD.from_model(layer)
    assert opt.depth == 1
    opt.step()
    N = 2.0  # the bias is the layer's only extra: N = ||grad b||
    G = 1.0 * 5 + math.sqrt(2) * 2.0**2 / N
    eta = math.log((1 + math.sqrt(1 + 4 * G)) / 2)
    assert float(opt.eta) == pytest.approx(eta, rel=1e-6)
    assert torch.allclose(W0 - layer.weight, eta * layer.weight.grad / 5, atol=1e-6)
    assert torch.allclose(b0 - layer.bias, eta * math.sqrt(2) * layer.bias.grad / N, atol=1e-6)
    # the bias moves the layer's output by eta/L in RMS, like the weight
    assert (b0 - layer.bias).norm().item() / math.sqrt(2) == pytest.approx(eta, rel=1e-5)


def test_gain_and_shift_share_their_layers_block():
    conv, bn = nn.Conv2d(2, 3, 1, bias=False), nn.BatchNorm2d(2)
    model = nn.Sequential(bn, nn.ReLU(), conv)
    g0, s0 = bn.weight.detach().clone(), bn.bias.detach().clone()
    conv.weight.grad = torch.zeros_like(conv.weight)
    bn.weight.grad = torch.tensor([3.0, 0.0])  # gain: s = 1
    bn.bias.grad = torch.tensor([0.0, 4.0])  # shift: s = sqrt(2)
    opt = AGD.from_model(model)
    opt.step()
    N = 5.0  # joint norm of the block (gain, shift)
    G = (1.0 * 9 + math.sqrt(2) * 16) / N
    eta = math.log((1 + math.sqrt(1 + 4 * G)) / 2)
    assert float(opt.eta) == pytest.approx(eta, rel=1e-6)
    assert torch.allclose(g0 - bn.weight, eta * bn.weight.grad / N, atol=1e-6)
    assert torch.allclose(s0 - bn.bias, eta * math.sqrt(2) * bn.bias.grad / N, atol=1e-6)


def _teacher_data(n=256, d=10, k=3):
    torch.manual_seed(0)
    x = torch.randn(n, d)
    return x, (x @ torch.randn(d, k)).argmax(1)


def _train(model, opt, x, y, steps=60, criterion=nn.functional.cross_entropy):
    losses = []
    for _ in range(steps):
        loss = criterion(model(x), y)
        opt.zero_grad()
        loss.backward()
        if isinstance(opt, CurvatureStep):
            names = [n for n, _ in model.named_parameters()]

            def loss_fn(ps, names=names):
                out = torch.func.functional_call(model, dict(zip(names, ps, strict=True)), (x,))
                return criterion(out, y)

            opt.step(loss_fn=loss_fn)
        else:
            opt.step()
        losses.append(loss.item())
    return losses


def test_models_with_biases_and_affine_train_with_agd():
    x, y = _teacher_data()
    fcn = orthogonal_init_(FCN(3, 64, 10, 3, bias=True))
    losses = _train(fcn, AGD.from_model(fcn), x, y)
    assert losses[-1] < 0.5 * losses[0]

    torch.manual_seed(0)
    images, labels = torch.randn(32, 3, 8, 8), torch.randint(0, 4, (32,))
    net = orthogonal_init_(preact_resnet18(3, 4, bias=True, width=4))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    losses = _train(net, AGD.from_model(net), images, labels, steps=15)
    assert losses[-1] < losses[0]
    moved = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    assert {"layers.0.0.bn1.weight", "layers.0.0.conv1.bias", "linear.bias"} <= moved


def test_spectral_update_is_orthogonal_with_spectral_norm_eta_over_L():
    torch.manual_seed(0)
    g = torch.randn(16, 8)
    o = orthogonalise(g[None], steps=20)[0]
    assert torch.allclose(o.mT @ o, torch.eye(8), atol=1e-3)
    W = nn.Parameter(torch.randn(16, 8))
    W0 = W.detach().clone()
    W.grad = g
    opt = AGDSpectral([W], ns_steps=20)
    opt.step()
    G = scale(W) * (g * o).sum().item()  # <g, O> ~ nuclear norm
    assert G == pytest.approx(scale(W) * torch.linalg.matrix_norm(g, "nuc").item(), rel=1e-3)
    eta = math.log((1 + math.sqrt(1 + 4 * G)) / 2)
    assert float(opt.eta) == pytest.approx(eta, rel=1e-3)
    top = torch.linalg.matrix_norm(W0 - W.detach(), 2).item()
    assert top == pytest.approx(eta * scale(W), rel=1e-3)


def test_spectral_agd_trains():
    x, y = _teacher_data()
    model = orthogonal_init_(FCN(3, 64, 10, 3, bias=True))
    losses = _train(model, AGDSpectral.from_model(model), x, y)
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("direction", ["sgd", "adam"])
def test_curvature_step_on_a_quadratic(direction):
    torch.manual_seed(0)
    A = torch.randn(6, 6)
    A = A @ A.T + torch.eye(6)
    b = torch.randn(6)

    def f(t):
        return 0.5 * t @ A @ t - b @ t

    results = {}
    for lam in (0.5, 1.0):
        theta = nn.Parameter(torch.randn(6, generator=torch.Generator().manual_seed(1)))
        opt = CurvatureStep([theta], direction=direction, lam=lam)
        loss = f(theta)
        loss.backward()
        start, g = theta.detach().clone(), theta.grad.clone()
        opt.step(loss_fn=lambda ps: f(ps[0]))
        d = (start - theta.detach()) / float(opt.rate)  # the direction taken
        results[lam] = (loss.item(), f(theta.detach()).item(), start, g, d)
    f0, f_half, start, g, d = results[0.5]
    t_star = (g @ d) / (d @ A @ d)  # exact line minimiser along d
    line = [f(start - t * d).item() for t in torch.linspace(0, 2 * t_star, 41)]
    assert f_half == pytest.approx(min(line), rel=1e-4, abs=1e-4)
    assert f_half == pytest.approx(f(start - t_star * d).item(), rel=1e-5, abs=1e-5)
    # lam = 1: the largest step that does not increase the loss (back to f0)
    assert results[1.0][1] == pytest.approx(f0, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("direction", ["sgd", "adam"])
def test_curvature_step_trains_an_fcn_with_the_loops_square_loss(direction):
    from agd_ray.train.step import loss_fn

    x, y = _teacher_data()
    model = FCN(3, 64, 10, 3, bias=True)
    opt = CurvatureStep(model.parameters(), direction=direction, lam=0.5)
    losses = _train(model, opt, x, y, criterion=loss_fn("mse", 3))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("extras", [False, True])
def test_compiled_step_equals_eager(extras):
    torch.manual_seed(0)
    eager = orthogonal_init_(FCN(3, 32, 10, 4, bias=extras))
    compiled = FCN(3, 32, 10, 4, bias=extras)
    compiled.load_state_dict(eager.state_dict())
    opt_e, opt_c = AGD.from_model(eager), AGD.from_model(compiled)
    step = torch.compile(opt_c.step, backend="aot_eager")  # no C++ toolchain needed
    x = torch.randn(16, 10)
    for _ in range(3):
        for model, opt, do_step in ((eager, opt_e, opt_e.step), (compiled, opt_c, step)):
            opt.zero_grad()
            model(x).square().mean().backward()
            do_step()
        assert float(opt_c.eta) == pytest.approx(float(opt_e.eta), rel=1e-6)
    for p, q in zip(eager.parameters(), compiled.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_bf16_weights_norms_accumulate_in_fp32():
    torch.manual_seed(0)
    w32 = nn.Parameter(torch.randn(64, 64))
    w16 = nn.Parameter(w32.detach().to(torch.bfloat16))
    w32.grad = torch.randn(64, 64) * 1e3  # squares overflow nothing in fp32 accumulation
    w16.grad = w32.grad.to(torch.bfloat16)
    o32, o16 = AGD([w32]), AGD([w16])
    o32.step()
    o16.step()
    assert o16.eta.dtype == torch.float32
    assert float(o16.eta) == pytest.approx(float(o32.eta), rel=1e-2)
    assert w16.dtype == torch.bfloat16
    assert torch.allclose(w16.float(), w32.detach(), atol=0.05)


def test_autocast_training_step_runs_and_learns():
    x, y = _teacher_data()
    model = orthogonal_init_(FCN(3, 64, 10, 3))
    opt = AGD.from_model(model)
    losses = []
    for _ in range(40):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_channels_last_kernels_step_like_contiguous_ones():
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(8, 4, 3, 3))
    b = nn.Parameter(a.detach().clone().to(memory_format=torch.channels_last))
    a.grad = torch.randn(8, 4, 3, 3)
    b.grad = a.grad.clone().to(memory_format=torch.channels_last)
    assert not b.is_contiguous()
    AGD([a]).step()
    AGD([b]).step()
    assert torch.allclose(a.detach(), b.detach(), atol=1e-6)


def test_curvature_state_round_trips_through_a_checkpoint():
    x, y = _teacher_data()
    model = FCN(2, 16, 10, 3)
    opt = CurvatureStep(model.parameters(), direction="adam")
    _train(model, opt, x, y, steps=3)
    fresh_model = FCN(2, 16, 10, 3)
    fresh_model.load_state_dict(model.state_dict())
    fresh = CurvatureStep(fresh_model.parameters(), direction="adam")
    fresh.load_state_dict(copy.deepcopy(opt.state_dict()))  # as if saved and read back
    assert fresh.t == 3 and torch.equal(fresh.c_avg, opt.c_avg)
    _train(model, opt, x, y, steps=2)
    _train(fresh_model, fresh, x, y, steps=2)
    for p, q in zip(model.parameters(), fresh_model.parameters(), strict=True):
        assert torch.equal(p, q)
