"""Taylor mode (``agd_ray.optim.taylor``): <H u, u> and the gradient from one forward
(and its backward, for the adjoint form) equal reverse-over-reverse's on every model the
curvature step trains (the GPT's against a finite difference: torch has no double
backward of CPU attention), each operation's rule on its own, forward-only as well,
and a model it cannot follow falls back with a warning."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from agd_ray.models import FCN, GPT, VGG, GPTConfig
from agd_ray.models.resnet import imagenet_resnet50, preact_resnet18
from agd_ray.optim.curvature import CurvatureStepOnePass
from agd_ray.optim.second_order import gradient_pass, sum_of_dots, uhu_forward
from agd_ray.optim.taylor import TaylorUnsupported, taylor_pass
from agd_ray.train.step import loss_fn


def _model_loss(model, x, y, kind):
    names = [n for n, _ in model.named_parameters()]
    buffers = dict(model.named_buffers())
    criterion = loss_fn(kind, 10)

    def f(params):
        out = functional_call(model, {**buffers, **dict(zip(names, params, strict=True))}, (x,))
        return criterion(out, y), out

    return f


def _reference(f, params, u):
    value, g, hvp = gradient_pass(f, params, keep_graph=True)
    return value, g, sum_of_dots(hvp(u), u)


def _case(name):
    torch.manual_seed(0)
    images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    if name == "fcn":
        return FCN(3, 16, 40, 10, bias=True), torch.randn(8, 40), torch.randint(0, 10, (8,)), "mse"
    if name == "resnet18":
        return preact_resnet18(3, 10, bias=True, width=8), images, labels, "xent"
    if name == "resnet50":  # torchvision's: x += identity, ReLU in place
        return imagenet_resnet50(10), images, labels, "xent"
    return VGG(3, 10, bias=True, width_mult=0.125), images, labels, "mse"


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("name", ["fcn", "resnet18", "resnet50", "vgg"])
def test_one_forward_gives_the_gradient_and_uhu_of_reverse_over_reverse(name, train):
    model, x, y, kind = _case(name)
    model = model.double().train(train)
    f = _model_loss(model, x.double(), y, kind)
    params = list(model.parameters())
    u = [torch.randn_like(p) for p in params]
    want_value, want_g, want_uhu = _reference(f, params, u)
    value, g, uhu = taylor_pass(f, params, u)
    torch.testing.assert_close(value[0], want_value[0])
    torch.testing.assert_close(value[1], want_value[1])
    for a, b in zip(g, want_g, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(uhu, want_uhu, rtol=1e-10, atol=1e-12)
    assert uhu.dtype == torch.float64 and abs(float(uhu)) > 1e-3


def test_the_gpt_uhu_matches_a_finite_difference():
    torch.manual_seed(0)
    model = GPT(GPTConfig(2, 32, 4, 16, 50, bias=True)).double()
    tokens, targets = torch.randint(0, 50, (2, 16)), torch.randint(0, 50, (2, 16))
    f = _model_loss(model, tokens, targets, "xent")
    params = list(model.parameters())
    u = [torch.randn_like(p) for p in params]
    _, g, uhu = taylor_pass(f, params, u)
    h = 2e-5
    with torch.no_grad():
        at = [f([p + t * v for p, v in zip(params, u, strict=True)])[0] for t in (h, 0.0, -h)]
    second_difference = (at[0] - 2 * at[1] + at[2]) / h**2
    torch.testing.assert_close(uhu, second_difference, rtol=1e-5, atol=0)
    first_difference = (at[0] - at[2]) / (2 * h)
    torch.testing.assert_close(sum_of_dots(g, u), first_difference, rtol=1e-6, atol=0)


def _ops(x, w):
    """Every pointwise, quotient and normalisation rule, composed."""
    y = F.linear(x, w)
    z = torch.exp(-y.square() / 4) + torch.log(1 + y.sigmoid()) + y.tanh() * F.gelu(y)
    z = z + torch.sqrt(1 + y**2) - torch.rsqrt(2 + y.pow(2)) + 1 / (2 + y.square())
    z = F.layer_norm(z, z.shape[-1:]) + F.softmax(z, -1) * 3 - F.log_softmax(z, -1)
    pooled = F.max_pool2d(z.reshape(1, 1, *z.shape), 2) - F.relu(z).mean()
    n = F.batch_norm(z[None].transpose(1, 2), None, None, training=True)
    return pooled.square().sum() + n.exp().mean() + F.cross_entropy(z, torch.arange(len(z)))


def test_each_rule_matches_reverse_over_reverse():
    torch.manual_seed(0)
    x = torch.randn(6, 5, dtype=torch.float64)
    w = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    u = [torch.randn_like(w)]
    value, g, uhu = taylor_pass(lambda ps: _ops(x, ps[0]), [w], u)
    want_value, want_g, want_uhu = _reference(lambda ps: _ops(x, ps[0]), [w], u)
    torch.testing.assert_close(value, want_value)
    torch.testing.assert_close(g[0], want_g[0])
    torch.testing.assert_close(uhu, want_uhu, rtol=1e-10, atol=1e-12)
    # the second coefficients carried forward instead of the adjoint form
    _, none, forward_uhu = taylor_pass(lambda ps: _ops(x, ps[0]), [w], u, grad=False)
    assert none is None
    torch.testing.assert_close(forward_uhu, want_uhu, rtol=1e-10, atol=1e-12)


class _Dropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 16), nn.Dropout(0.0), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)


def test_a_model_with_an_operation_it_has_no_rule_for_falls_back_to_reverse():
    torch.manual_seed(0)
    x, y = torch.randn(32, 10), torch.randint(0, 3, (32,))
    model = _Dropout()
    params = list(model.parameters())
    f = _model_loss(model, x, y, "xent")
    with pytest.raises(TaylorUnsupported, match="dropout"):
        taylor_pass(f, params, [torch.ones_like(p) for p in params])
    opt = CurvatureStepOnePass(params, along="previous", direction="sgd")
    with pytest.warns(UserWarning, match="'dropout'.*reverse-over-reverse"):
        first = opt.step(loss_fn=f)
    assert opt.second_order == "reverse"
    losses = [float(first[0])] + [float(opt.step(loss_fn=f)[0]) for _ in range(20)]
    assert losses[-1] < losses[0]
    # a resumed run keeps the fallback (no partial Taylor forward after a restart)
    resumed = CurvatureStepOnePass(params, along="previous", direction="sgd")
    resumed.load_state_dict(opt.state_dict())
    assert resumed.second_order == "reverse"


def test_a_pass_of_its_own_leaves_batchnorm_statistics_alone():
    model, x, y, kind = _case("resnet18")
    params = list(model.parameters())
    f = _model_loss(model, x, y, kind)
    before = {n: b.clone() for n, b in model.named_buffers()}
    u = [torch.randn_like(p) for p in params]
    uhu = {}
    for method in ("taylor", "reverse"):
        uhu[method] = uhu_forward(f, params, u, method)
        for n, b in model.named_buffers():
            assert torch.equal(b, before[n]), (method, n)
    torch.testing.assert_close(uhu["taylor"], uhu["reverse"], rtol=1e-4, atol=1e-4)
    assert abs(float(uhu["taylor"])) > 1e-2
    f(params)  # the step's own forward moves them
    assert int(model.bn.num_batches_tracked) == 1


def _two_layers(body):
    """A loss of (W1, W2) with ``body`` between the layers, and its u and reference."""
    torch.manual_seed(0)
    x = torch.randn(16, 5, dtype=torch.float64)
    params = [torch.randn(6, 5, dtype=torch.float64, requires_grad=True)]
    params.append(torch.randn(3, 6, dtype=torch.float64, requires_grad=True))

    def f(ps):
        return F.linear(body(F.linear(x, ps[0])), ps[1]).square().mean()

    return f, params, [torch.randn_like(p) for p in params]


def _used_then_relu_in_place(h):
    h = h * h
    z = h.sum(1, keepdim=True)  # reads h before the ReLU overwrites it
    return F.relu(h, inplace=True) + z


def _relu_in_place_on_a_view(h):
    h = h * h - 3
    h.view(-1).relu_()
    return h


def _item_assignment(h):
    h = h * 2
    h[:, 0] = 0.0
    return h


def _under_no_grad(h):
    with torch.no_grad():
        scale = (h * h).mean(0, keepdim=True).sqrt()
    return h / scale


@pytest.mark.parametrize(
    "body", [_used_then_relu_in_place, _relu_in_place_on_a_view, _item_assignment, _under_no_grad]
)
def test_what_it_cannot_follow_is_refused_not_miscomputed(body):
    f, params, u = _two_layers(body)
    with pytest.raises(TaylorUnsupported):
        taylor_pass(f, params, u)


@pytest.mark.parametrize(
    "body",
    [
        lambda h: (h + torch.arange(6)).tanh(),  # an integer operand is a constant
        lambda h: h.pow(1) * h.pow(0) + (h * h).relu_(),  # powers 0 and 1 at any x
        lambda h: torch.zeros_like(h).pow(1) + h,
    ],
)
def test_edge_cases_it_follows(body):
    f, params, u = _two_layers(body)
    _, _, uhu = taylor_pass(f, params, u)
    torch.testing.assert_close(uhu, _reference(f, params, u)[2], rtol=1e-10, atol=1e-12)
