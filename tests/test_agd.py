"""AGD against values derived by hand from the paper's equations, and the fast
step against the rule written plainly (``agd_update``)."""

import math

import pytest
import torch

from agd_ray.config import ModelConfig
from agd_ray.data import DataSpec
from agd_ray.models import FCN, build_model
from agd_ray.optim import AGD, orthogonal_init_, scale
from agd_ray.optim.agd import agd_update


def _params(*tensors):
    return [torch.nn.Parameter(t.clone()) for t in tensors]


def test_scale_of_matrices_and_kernels():
    assert scale(torch.empty(8, 2)) == pytest.approx(2.0)
    assert scale(torch.empty(2, 8)) == pytest.approx(0.5)
    # conv (d_out, d_in, kx, ky): sqrt(d_out/d_in) / sqrt(kx*ky)
    assert scale(torch.empty(16, 4, 3, 3)) == pytest.approx(2.0 / 3.0)
    with pytest.raises(ValueError):
        scale(torch.empty(5))


def test_step_matches_hand_derivation():
    # A: (2, 2), s = 1, ||grad|| = 5;  B: (8, 2), s = 2, ||grad|| = 2.
    A, B = _params(torch.randn(2, 2), torch.randn(8, 2))
    A0, B0 = A.detach().clone(), B.detach().clone()
    A.grad = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    B.grad = torch.zeros(8, 2)
    B.grad[0, 0] = 2.0
    opt = AGD([A, B])
    opt.step()

    L = 2
    G = (1 * 5 + 2 * 2) / L  # 4.5
    eta = math.log((1 + math.sqrt(1 + 4 * G)) / 2)
    assert float(opt.eta) == pytest.approx(eta, rel=1e-6)
    assert torch.allclose(A0 - A.detach(), eta / L * 1.0 * A.grad / 5, atol=1e-6)
    assert torch.allclose(B0 - B.detach(), eta / L * 2.0 * B.grad / 2, atol=1e-6)
    # each update's Frobenius norm is gain * eta / L * s_k
    assert (A0 - A.detach()).norm().item() == pytest.approx(eta / L * 1.0, rel=1e-5)
    assert (B0 - B.detach()).norm().item() == pytest.approx(eta / L * 2.0, rel=1e-5)


def test_gain_scales_the_update_not_eta():
    (W,) = _params(torch.randn(4, 4))
    W0 = W.detach().clone()
    W.grad = torch.full((4, 4), 0.5)  # norm 2, s = 1 -> G = 2
    opt = AGD([W], gain=3.0)
    opt.step()
    eta = math.log((1 + math.sqrt(1 + 8)) / 2)
    assert float(opt.eta) == pytest.approx(eta, rel=1e-6)
    assert (W0 - W.detach()).norm().item() == pytest.approx(3.0 * eta, rel=1e-5)


def test_conv_kernel_is_treated_per_submatrix():
    # (d_out=2, d_in=2, 1, 2): two 2x2 sub-matrices, s = 1/sqrt(2).
    (K,) = _params(torch.randn(2, 2, 1, 2))
    K0 = K.detach().clone()
    grad = torch.zeros(2, 2, 1, 2)
    grad[:, :, 0, 1] = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # norm 1
    grad[:, :, 0, 0] = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # norm 5
    K.grad = grad
    opt = AGD([K])
    opt.step()
    s = 1 / math.sqrt(2)
    G = s * (5 + 1) / 1
    eta = math.log((1 + math.sqrt(1 + 4 * G)) / 2)
    assert float(opt.eta) == pytest.approx(eta, rel=1e-6)
    delta = K0 - K.detach()
    # every sub-matrix moves by exactly eta/L * s in Frobenius norm, whatever its gradient's size
    for i in range(2):
        assert delta[:, :, 0, i].norm().item() == pytest.approx(eta * s, rel=1e-5)
    assert torch.allclose(delta[:, :, 0, 1], eta * s * grad[:, :, 0, 1] / 1, atol=1e-6)


def test_zero_and_none_gradients_do_not_move_or_nan():
    A, B, C = _params(torch.randn(3, 3), torch.randn(3, 3), torch.randn(2, 3, 3, 3))
    before = [p.detach().clone() for p in (A, B, C)]
    A.grad = torch.zeros(3, 3)
    B.grad = None
    C.grad = torch.zeros(2, 3, 3, 3)
    C.grad[:, :, 0, 0] = 1.0  # one sub-matrix has a gradient, the other eight are zero
    opt = AGD([A, B, C])
    opt.step()
    assert torch.equal(A.detach(), before[0])
    assert torch.equal(B.detach(), before[1])
    assert torch.isfinite(C.detach()).all()
    assert torch.equal(C.detach()[:, :, 1:, :], before[2][:, :, 1:, :])
    assert not torch.equal(C.detach()[:, :, 0, 0], before[2][:, :, 0, 0])
    # L counts every weight tensor (3), even those without a gradient this step
    G = scale(C) * math.sqrt(6) / 3
    assert float(opt.eta) == pytest.approx(math.log((1 + math.sqrt(1 + 4 * G)) / 2), rel=1e-6)

    A.grad = torch.zeros(3, 3)
    C.grad = torch.zeros(2, 3, 3, 3)
    opt.step()  # all-zero gradients: eta = 0 and nothing moves
    assert float(opt.eta) == 0.0
    assert all(torch.isfinite(p).all() for p in (A, B, C))


def test_refuses_vectors_with_a_clear_message():
    with pytest.raises(ValueError, match="bias: false"):
        AGD(_params(torch.randn(3, 3), torch.randn(3)))
    with pytest.raises(ValueError):
        AGD(_params(torch.randn(3, 3)), gain=0.0)


def test_state_dict_round_trip():
    model = FCN(3, 16, 8, 4)
    opt = AGD(model.parameters(), gain=0.7)
    model(torch.randn(5, 8)).square().sum().backward()
    opt.step()
    state = opt.state_dict()
    assert state["param_groups"][0]["gain"] == 0.7

    fresh = AGD(FCN(3, 16, 8, 4).parameters(), gain=1.0)
    fresh.load_state_dict(state)
    assert fresh.param_groups[0]["gain"] == 0.7
    assert fresh.state_dict()["param_groups"] == state["param_groups"]


def test_training_a_small_fcn_reduces_loss():
    torch.manual_seed(0)
    x = torch.randn(256, 10)
    y = (x @ torch.randn(10, 3)).argmax(1)  # a learnable teacher
    model = orthogonal_init_(FCN(3, 64, 10, 3))
    opt = AGD(model.parameters())
    losses = []
    for _ in range(100):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_reference_rule_matches_hand_derivation():
    # the weights of test_step_matches_hand_derivation, a zero gradient, and a bias block
    A, B, Z = torch.tensor([[3.0, 0.0], [0.0, 4.0]]), torch.zeros(8, 2), torch.zeros(3, 3)
    B[0, 0] = 2.0
    bias, gain = torch.tensor([0.0, 2.0]), torch.tensor([3.0, 0.0, 0.0])
    G, eta, (dA, dB, dZ, db, dg) = agd_update(
        [A, B, Z], depth=4, gain=0.5, extras=[[("bias", bias), ("gain", gain)]]
    )
    N = math.sqrt(2.0**2 + 3.0**2)  # the block's joint norm
    G_hand = (1 * 5 + 2 * 2 + 0 + (math.sqrt(2) * 2.0**2 + 1 * 3.0**2) / N) / 4
    eta_hand = math.log((1 + math.sqrt(1 + 4 * G_hand)) / 2)
    assert float(G) == pytest.approx(G_hand, rel=1e-6)
    assert float(eta) == pytest.approx(eta_hand, rel=1e-6)
    step = 0.5 * eta_hand / 4
    assert torch.allclose(dA, step * 1.0 * A / 5, atol=1e-7)
    assert torch.allclose(dB, step * 2.0 * B / 2, atol=1e-7)
    assert torch.equal(dZ, torch.zeros(3, 3))  # a zero gradient moves nothing, no NaN
    assert torch.allclose(db, step * math.sqrt(2) * bias / N, atol=1e-7)
    assert torch.allclose(dg, step * 1.0 * gain / N, atol=1e-7)


def _loose_weights():
    torch.manual_seed(0)
    shapes = [(16, 8), (8, 16), (12, 6, 3, 3), (4, 12, 1, 1), (10, 4), (5, 5)]
    weights = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    for w in weights[:-1]:  # the last has no gradient: it still counts in L
        w.grad = torch.randn_like(w)
    return weights, AGD(weights, gain=0.7)


def _model(model, x, from_model=True):
    torch.manual_seed(0)
    model = orthogonal_init_(model)
    opt = AGD.from_model(model) if from_model else AGD(model.parameters())
    model(x).square().mean().backward()
    return list(model.parameters()), opt


CASES = {
    "matrices and kernels, gain 0.7": _loose_weights,
    "fcn": lambda: _model(FCN(4, 32, 10, 4), torch.randn(8, 10), from_model=False),
    "fcn with biases": lambda: _model(FCN(4, 32, 10, 4, bias=True), torch.randn(8, 10)),
    "resnet18 with biases and batchnorm": lambda: _model(
        build_model(
            ModelConfig(arch="resnet18", width=8, bias=True), DataSpec("cifar10", (3, 32, 32), 10)
        ),
        torch.randn(4, 3, 32, 32),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_fast_step_equals_the_reference_rule(case):
    params, opt = CASES[case]()
    # agd_update's inputs, from the optimizer's layers: weights, then each layer's extras
    weights, extras, blocks = [], [], []
    for group in opt.param_groups:
        roles = group["roles"] or ["weight"] * len(group["params"])
        present = [
            (r, p) for r, p in zip(roles, group["params"], strict=True) if p.grad is not None
        ]
        weights += [p for r, p in present if r == "weight"]
        if block := [(r, p) for r, p in present if r != "weight"]:
            extras += [p for _, p in block]
            blocks.append([(r, p.grad) for r, p in block])
    assert len(weights) + len(extras) == sum(p.grad is not None for p in params)
    roles = {r for block in blocks for r, _ in block}
    assert roles == {
        "fcn with biases": {"bias"},
        "resnet18 with biases and batchnorm": {"bias", "gain", "shift"},
    }.get(case, set())
    G, eta, updates = agd_update(
        [w.grad for w in weights], opt.depth, opt.param_groups[0]["gain"], blocks
    )
    expected = [p.detach() - u for p, u in zip(weights + extras, updates, strict=True)]
    before = [p.detach().clone() for p in params]

    opt.step()
    assert float(opt.G) == pytest.approx(float(G), rel=1e-5)
    assert float(opt.eta) == pytest.approx(float(eta), rel=1e-5)
    for p, e in zip(weights + extras, expected, strict=True):
        assert torch.allclose(p.detach(), e, rtol=1e-5, atol=1e-6)
    moved = {id(p) for p in weights + extras}
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True) if id(p) not in moved)
