"""The curvature-rescaled step, exact and one-pass (along the previous direction, or
along this step's, which is the exact step), with <H u, u> by Taylor mode or
reverse-over-reverse: on a quadratic each lands where its equations say; the one-pass
step trains an FCN and a BatchNorm ResNet, moves BatchNorm statistics once per step
and resumes exactly."""

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from agd_ray.models import FCN
from agd_ray.models.resnet import preact_resnet18
from agd_ray.optim.curvature import CurvatureStep, CurvatureStepOnePass
from agd_ray.optim.second_order import grad_and_hvp
from agd_ray.train.step import loss_fn as make_loss_fn

LAM, BETA3 = 0.5, 0.9


def _quadratic():
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    A = A @ A.T + torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    theta0 = torch.randn(6, generator=gen, dtype=torch.float64)
    return A, b, theta0


def _by_hand(A, b, theta, momentum, one_pass, steps):
    """The iterates from the equations: d = g (+ momentum * d_prev); the curvature
    along u = d (exact; the one-pass step's first step) or u = d_prev (one-pass)."""
    iterates, c_avg, d_prev = [], 0.0, None
    for t in range(1, steps + 1):
        g = A @ theta - b
        d = g if d_prev is None else momentum * d_prev + g
        u = d if (not one_pass or d_prev is None) else d_prev
        c = (u @ A @ u) / (u @ u)
        c_avg = BETA3 * c_avg + (1 - BETA3) * c
        L = max(c_avg / (1 - BETA3**t), c)
        theta = theta - LAM * 2 * (g @ d) / (L * (d @ d)) * d
        iterates.append(theta)
        d_prev = d
    return iterates


@pytest.mark.parametrize("second_order", ["taylor", "reverse"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("step", ["exact", "one_pass", "one_pass_current"])
def test_the_steps_land_where_the_equations_say_on_a_quadratic(step, momentum, second_order):
    A, b, theta0 = _quadratic()

    def f(t):
        return 0.5 * t @ A @ t - b @ t

    theta = nn.Parameter(theta0.clone())
    kwargs = dict(
        direction="sgd", lam=LAM, momentum=momentum, beta3=BETA3, second_order=second_order
    )
    if step == "exact":
        opt = CurvatureStep([theta], **kwargs)
    else:
        along = "current" if step == "one_pass_current" else "previous"
        opt = CurvatureStepOnePass([theta], along=along, **kwargs)
    # along the current direction, in one pass, the step is the exact one
    previous = step == "one_pass"
    expected = _by_hand(A, b, theta0, momentum, previous, steps=4)
    for want in expected:
        before = f(theta.detach())
        if step == "exact":
            opt.zero_grad()
            f(theta).backward()
            opt.step(loss_fn=lambda ps: f(ps[0]))
        else:  # the step takes the gradient itself and returns the loss
            assert float(opt.step(loss_fn=lambda ps: f(ps[0]))) == pytest.approx(float(before))
            assert theta.grad is None
        # the step's scalars (c, L, r) are fp32 whatever the parameters' dtype
        torch.testing.assert_close(theta.detach(), want, rtol=1e-5, atol=1e-7)
    # the two differ after the first step: the one-pass c is along the previous direction
    other = _by_hand(A, b, theta0, momentum, not previous, steps=4)
    torch.testing.assert_close(other[0], expected[0], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(other[-1], expected[-1], rtol=1e-2, atol=0)


def test_grad_and_hvp_is_the_gradient_and_the_hessian_times_u():
    A, b, theta = _quadratic()
    theta.requires_grad_()
    u = torch.ones(6, dtype=torch.float64)
    value, (g,), (hu,) = grad_and_hvp(lambda ps: 0.5 * ps[0] @ A @ ps[0] - b @ ps[0], [theta], [u])
    torch.testing.assert_close(g, (A @ theta - b).detach())
    torch.testing.assert_close(hu, A @ u)
    with torch.no_grad():
        assert float(value) == pytest.approx(float(0.5 * theta @ A @ theta - b @ theta))


def _data(n=256, d=10, k=3):
    torch.manual_seed(0)
    x = torch.randn(n, d)
    return x, (x @ torch.randn(d, k)).argmax(1)


def _one_pass_loss(model, x, y, criterion):
    """params -> (loss, output), with the model's live buffers (BatchNorm's running
    statistics are updated by this, the step's only forward pass)."""
    names = [n for n, _ in model.named_parameters()]

    def loss_of(params):
        state = {**dict(model.named_buffers()), **dict(zip(names, params, strict=True))}
        out = functional_call(model, state, (x,))
        return criterion(out, y), out

    return loss_of


def _train_one_pass(model, opt, x, y, steps, criterion=nn.functional.cross_entropy):
    losses = []
    for _ in range(steps):
        loss, out = opt.step(loss_fn=_one_pass_loss(model, x, y, criterion))
        assert out.shape == (len(y), out.shape[1]) and not out.requires_grad
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("direction", ["sgd", "adam"])
def test_one_pass_step_trains_an_fcn_with_the_loops_square_loss(direction):
    x, y = _data()
    model = FCN(3, 64, 10, 3, bias=True)
    opt = CurvatureStepOnePass(model.parameters(), direction=direction, lam=0.5)
    losses = _train_one_pass(model, opt, x, y, steps=60, criterion=make_loss_fn("mse", 3))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("along", ["previous", "current"])
def test_one_pass_step_updates_batchnorm_statistics_once_per_step(along):
    """Whichever pass computes c (the gradient's, or a Taylor forward of its own), the
    running statistics move once per step, and Taylor mode takes the step that
    reverse-over-reverse does."""
    torch.manual_seed(0)
    images, labels = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    nets, opts = {}, {}
    for method in ("taylor", "reverse"):
        torch.manual_seed(0)
        nets[method] = net = preact_resnet18(3, 4, bias=True, width=4).double()
        opts[method] = CurvatureStepOnePass(
            net.parameters(), along=along, direction="adam", lam=0.5, second_order=method
        )
    for step in range(1, 3):
        for method in ("taylor", "reverse"):
            _train_one_pass(nets[method], opts[method], images.double(), labels, steps=1)
        torch.testing.assert_close(opts["taylor"].curvature, opts["reverse"].curvature)
        reverse_state = nets["reverse"].state_dict()
        for key, value in nets["taylor"].state_dict().items():
            torch.testing.assert_close(value, reverse_state[key])
        assert int(nets["taylor"].bn.num_batches_tracked) == step
    losses = _train_one_pass(nets["taylor"], opts["taylor"], images.double(), labels, steps=10)
    assert int(nets["taylor"].bn.num_batches_tracked) == 12
    assert losses[-1] < losses[0]


def test_one_pass_state_round_trips_through_a_checkpoint():
    x, y = _data()
    model = FCN(2, 16, 10, 3)
    opt = CurvatureStepOnePass(model.parameters(), direction="adam")
    _train_one_pass(model, opt, x, y, steps=3)
    fresh_model = FCN(2, 16, 10, 3)
    fresh_model.load_state_dict(model.state_dict())
    fresh = CurvatureStepOnePass(fresh_model.parameters(), direction="adam")
    fresh.load_state_dict(copy.deepcopy(opt.state_dict()))  # as if saved and read back
    _train_one_pass(model, opt, x, y, steps=2)
    _train_one_pass(fresh_model, fresh, x, y, steps=2)
    for p, q in zip(model.parameters(), fresh_model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("second_order", ["taylor", "reverse"])
@pytest.mark.parametrize("name", ["curvature", "curvature_onepass"])
def test_the_loops_curvature_steps_and_their_forwards(name, second_order):
    """The training loop's step for both registry entries takes the gradient itself;
    ``curvature`` takes the exact step's iterates. Forwards per step: the gradient's,
    and a Taylor forward of its own when c is along this step's direction (every step
    of ``curvature``, the first of ``curvature_onepass``); reverse-over-reverse takes
    c in the gradient's pass."""
    from agd_ray.config import load_config
    from agd_ray.optim.registry import OPTIMIZERS
    from agd_ray.train.step import Parts, train_step

    overrides = [f"optimizer.name={name}", "optimizer.direction=adam"]
    cfg = load_config(None, [*overrides, f"optimizer.second_order={second_order}"])
    x, y = _data()
    criterion = make_loss_fn("mse", 3)
    torch.manual_seed(0)
    model = FCN(3, 32, 10, 3, bias=True)
    exact_model = copy.deepcopy(model)
    entry = OPTIMIZERS[name]
    parts = Parts(
        model, entry.build(cfg.optimizer, model), entry, criterion, torch.device("cpu"), None
    )
    assert parts.optimizer.second_order == second_order
    exact = CurvatureStep(exact_model.parameters(), direction="adam", lam=cfg.optimizer.lam)
    forwards = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    taylor = second_order == "taylor"
    for step in range(1, 4):
        loss, out = train_step(parts, x, y)
        assert out.shape == (len(y), 3) and not loss.requires_grad
        exact.zero_grad()
        criterion(exact_model(x), y).backward()
        exact.step(loss_fn=lambda ps: _one_pass_loss(exact_model, x, y, criterion)(ps)[0])
        if name == "curvature":
            assert len(forwards) == step * (2 if taylor else 1)
        else:
            assert len(forwards) == step + taylor
    same = all(
        torch.allclose(p, q, rtol=1e-5, atol=1e-6)
        for p, q in zip(model.parameters(), exact_model.parameters(), strict=True)
    )
    assert same == (name == "curvature")


class _Logger:
    """The loop's W&B logger, recording what it is given."""

    active, every = True, 1

    def __init__(self):
        self.steps = []

    def log_step(self, step, metrics):
        self.steps.append((step, metrics))


def test_the_loop_logs_the_steps_curvature_length_and_rate():
    from torch.utils.data import TensorDataset

    from agd_ray.config import load_config
    from agd_ray.optim.registry import OPTIMIZERS
    from agd_ray.train.batches import GlobalBatchSampler
    from agd_ray.train.step import Parts, train_epoch

    cfg = load_config(None, ["optimizer.name=curvature_onepass", "data.loader_workers=0"])
    x, y = _data()
    torch.manual_seed(0)
    model = FCN(3, 32, 10, 3)
    entry = OPTIMIZERS["curvature_onepass"]
    logger = _Logger()
    parts = Parts(
        model,
        entry.build(cfg.optimizer, model),
        entry,
        make_loss_fn("mse", 3),
        torch.device("cpu"),
        logger,
    )
    sampler = GlobalBatchSampler(len(y), 64, 0, 1, seed=0)
    metrics, steps, samples = train_epoch(cfg, parts, TensorDataset(x, y), sampler, 0)
    assert steps == 4 and len(logger.steps) == 4
    assert [step for step, _ in logger.steps] == [1, 2, 3, 4]
    for _, logged in logger.steps:
        assert {"train/loss", "train/curvature", "train/L", "train/rate"} <= set(logged)
        assert logged["train/L"] >= logged["train/curvature"] > 0 and logged["train/rate"] > 0


def test_a_run_of_skipped_steps_is_said():
    """Where the curvature along every direction is negative (a concave quadratic),
    every step is skipped: the weights stay, and a warning says so every 50 steps."""
    A, b, theta0 = _quadratic()
    theta = nn.Parameter(theta0.clone())
    opt = CurvatureStepOnePass([theta], along="current", direction="sgd")
    with pytest.warns(UserWarning, match="last 50 steps") as said:
        for _ in range(100):
            opt.step(loss_fn=lambda ps: -0.5 * ps[0] @ A @ ps[0] - b @ ps[0])
    assert len([w for w in said if "curvature step" in str(w.message)]) == 2
    assert torch.equal(theta.detach(), theta0) and int(opt.skipped) == 100
