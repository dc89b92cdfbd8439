"""Data parallelism: two gloo processes on the halves of each batch end with the same
weights as one process on the whole batch (AGD computes G from the all-reduced gradient;
the one-pass curvature step averages g and <H u, u> over ranks)."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn import functional as F

from agd_ray.models import FCN
from agd_ray.optim import AGD, orthogonal_init_

STEPS, BATCH = 5, 32


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS, BATCH, 40, generator=g)
    y = torch.randint(0, 10, (STEPS, BATCH), generator=g)
    return x, y


def _train(model, x, y):
    opt = AGD(model.parameters())
    etas = []
    for xb, yb in zip(x, y, strict=True):
        out = model(xb)
        loss = F.mse_loss(out, F.one_hot(yb, 10).float() * 10**0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        etas.append(float(opt.eta))
    return etas


def _model():
    torch.manual_seed(123)
    return orthogonal_init_(FCN(3, 64, 40, 10))


def _hook_worker(rank, world, init_file, out):
    from agd_ray.train.noise import LocalGradNorm, grad_sq_norm, local_norm_hook

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = torch.nn.parallel.DistributedDataParallel(_model())
    state = LocalGradNorm(torch.device("cpu"))
    model.register_comm_hook(state, local_norm_hook)
    x, y = _data()
    half = BATCH // world
    out_ = model(x[0, rank * half : (rank + 1) * half])
    F.mse_loss(out_, F.one_hot(y[0, rank * half : (rank + 1) * half], 10).float()).backward()
    local = state.take()
    torch.save({"local": local, "global": grad_sq_norm(list(model.parameters()))}, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.ray  # integration tier: two gloo processes
def test_comm_hook_reads_local_norms_and_still_averages(tmp_path):
    """The noise-scale hook sees each worker's own gradient and leaves DDP's mean."""
    out = str(tmp_path / "norms")
    mp.start_processes(
        _hook_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, start_method="spawn"
    )
    x, y = _data()
    half = BATCH // 2
    expected_local = []
    for rank in range(2):
        model = _model()
        out_ = model(x[0, rank * half : (rank + 1) * half])
        F.mse_loss(out_, F.one_hot(y[0, rank * half : (rank + 1) * half], 10).float()).backward()
        expected_local.append(sum(p.grad.square().sum() for p in model.parameters()))
    full = _model()
    F.mse_loss(full(x[0]), F.one_hot(y[0], 10).float()).backward()
    expected_global = sum(p.grad.square().sum() for p in full.parameters())
    for rank in range(2):
        got = torch.load(f"{out}.{rank}")
        assert float(got["local"]) == pytest.approx(float(expected_local[rank]), rel=1e-4)
        assert float(got["global"]) == pytest.approx(float(expected_global), rel=1e-4)


def _gpt():
    from agd_ray.models import GPT, GPTConfig

    torch.manual_seed(7)
    return orthogonal_init_(GPT(GPTConfig(depth=1, width=32, heads=2, context=8, vocab=40)))


def _gpt_train(model, tokens):
    """AGD with the GPT's roles (its LayerNorm gains are extras); one sequence batch a step."""
    opt = AGD.from_model(model.module if hasattr(model, "module") else model)
    etas = []
    for batch in tokens:
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 40), batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        etas.append(float(opt.eta))
    return etas


def _gpt_data():
    tokens = torch.randint(0, 40, (STEPS, BATCH, 9), generator=torch.Generator().manual_seed(0))
    return (tokens,)


def _curvature_train(model, x, y):
    """The one-pass curvature step (Taylor mode, c along the previous direction): each
    rank's gradient all-reduced and its <H u, u> averaged in the step."""
    from torch.func import functional_call

    from agd_ray.optim.curvature import CurvatureStepOnePass

    net = model.module if hasattr(model, "module") else model
    names = [n for n, _ in net.named_parameters()]
    opt = CurvatureStepOnePass(list(net.parameters()), along="previous", direction="adam")
    rates = []
    for xb, yb in zip(x, y, strict=True):

        def loss_of(params, xb=xb, yb=yb):
            out = functional_call(net, dict(zip(names, params, strict=True)), (xb,))
            return F.mse_loss(out, F.one_hot(yb, 10).float() * 10**0.5)

        opt.step(loss_fn=loss_of)
        rates.append(float(opt.rate))
    return rates


# (model, its data: tensors (steps, batch, ...), training on a slice of each batch)
CASES = {
    "fcn": (_model, _data, _train),
    "gpt": (_gpt, _gpt_data, _gpt_train),
    "curvature": (_model, _data, _curvature_train),
}
ATOL = {"fcn": 1e-6, "gpt": 1e-5, "curvature": 1e-5}  # the GPT's attention sums in another order


def _worker(rank, world, init_file, out, case):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    make, data, train = CASES[case]
    model = torch.nn.parallel.DistributedDataParallel(make())
    half = BATCH // world
    etas = train(model, *(t[:, rank * half : (rank + 1) * half] for t in data()))
    torch.save({"state": model.module.state_dict(), "etas": etas}, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.ray  # integration tier: two gloo processes
@pytest.mark.parametrize("case", CASES)
def test_two_gloo_processes_equal_one_process(tmp_path, case):
    out = str(tmp_path / "weights")
    mp.start_processes(
        _worker, args=(2, str(tmp_path / "init"), out, case), nprocs=2, start_method="spawn"
    )
    make, data, train = CASES[case]
    single = make()
    single_etas = train(single, *data())
    for rank in range(2):
        got = torch.load(f"{out}.{rank}")
        assert got["etas"] == pytest.approx(single_etas, rel=1e-5)
        for name, w in single.state_dict().items():
            assert torch.allclose(got["state"][name], w, atol=ATOL[case]), name
