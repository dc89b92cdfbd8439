"""Step time of AGD, spectral AGD, the curvature step, Adam and SGD.

    uv run python benchmarks/step_time.py [--device cpu|cuda] [--repeats 20] [--compile]

Two tables, every time the median of ``--repeats`` runs taken in turn (the
optimizers interleaved, so that machine noise hits them alike, in a fresh random
order each time: in a fixed order the one that runs first was measured up to 0.1x
slower against SGD; compare ratios):

1. The optimizer step alone on 8 weights of 1024x1024 with fixed random gradients
   (AGD's goals: <= 0.8x torch.optim.Adam(foreach=True), <= 1.6x SGD(foreach=True)).
2. A whole training step (forward, backward, step) of the 8x1024 FCN on a batch of
   128 MNIST-1D-sized inputs, and of the pre-activation ResNet-18 on a batch of 32
   CIFAR-sized images, for every optimizer; ratio to SGD. The one-pass curvature
   step takes its gradient itself (one forward-over-reverse pass, no backward).

Needs only torch (no Ray): it also runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from torch import nn


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fns: dict, repeats: int, device: torch.device, warmup: int = 3) -> dict:
    """Median wall time of each fn over ``repeats`` interleaved rounds (each in a
    random order, seeded), in ms."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    order, rng = list(fns), random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)
        for k in order:
            fn = fns[k]
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def make_optimizer(name: str, model: nn.Module, compile_step: bool):
    from agd_ray.optim import AGD, AGDSpectral, CurvatureStep
    from agd_ray.optim.curvature import CurvatureStepOnePass

    if name == "agd":
        opt = AGD.from_model(model)
    elif name == "agd_spectral":
        opt = AGDSpectral.from_model(model)
    elif name == "curvature":
        opt = CurvatureStep(model.parameters(), direction="adam", lam=0.5)
    elif name == "curvature_onepass":
        opt = CurvatureStepOnePass(model.parameters(), direction="adam", lam=0.5)
    elif name == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, foreach=True)
    step = opt.step
    if compile_step and not name.startswith("curvature"):
        step = torch.compile(opt.step)
    return opt, step


def optimizer_step_table(args, device) -> dict:
    """Table 1: the step alone on 8 x (1024 x 1024)."""
    fns = {}
    for name in ("agd", "agd_spectral", "adam", "sgd"):
        model = nn.Sequential(*[nn.Linear(1024, 1024, bias=False) for _ in range(8)]).to(device)
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        _, step = make_optimizer(name, model, args.compile)
        fns[name] = step
    return median_ms(fns, args.repeats, device)


def training_step_table(args, device, arch: str) -> dict:
    """Table 2: forward + backward + step."""
    from agd_ray.models import FCN
    from agd_ray.models.resnet import preact_resnet18
    from agd_ray.optim import CurvatureStep, orthogonal_init_
    from agd_ray.optim.curvature import CurvatureStepOnePass

    torch.manual_seed(0)
    if arch == "fcn":
        x, y = torch.randn(128, 40, device=device), torch.randint(0, 10, (128,), device=device)
    else:
        x = torch.randn(32, 3, 32, 32, device=device)
        y = torch.randint(0, 10, (32,), device=device)
    fns = {}
    for name in ("agd", "agd_spectral", "curvature", "curvature_onepass", "adam", "sgd"):
        model = FCN(8, 1024, 40, 10) if arch == "fcn" else preact_resnet18(3, 10)
        model = orthogonal_init_(model).to(device)
        opt, step = make_optimizer(name, model, args.compile)
        names = [n for n, _ in model.named_parameters()]
        buffers = dict(model.named_buffers())

        def loss_fn(params, model=model, names=names, buffers=buffers, output=False):
            # the exact step's second pass runs on copies of the buffers; the one-pass
            # step's only pass updates them, as the training loop's forward would
            buffers = buffers if output else {k: b.clone() for k, b in buffers.items()}
            state = {**buffers, **dict(zip(names, params, strict=True))}
            out = torch.func.functional_call(model, state, (x,))
            loss = nn.functional.cross_entropy(out, y)
            return (loss, out) if output else loss

        def train_step(model=model, opt=opt, step=step, loss_fn=loss_fn):
            opt.zero_grad(set_to_none=True)
            if isinstance(opt, CurvatureStepOnePass):  # its pass is the backward
                opt.step(loss_fn=lambda params: loss_fn(params, output=True))
                return
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            if isinstance(opt, CurvatureStep):
                opt.step(loss_fn=loss_fn)
            else:
                step()

        fns[name] = train_step
    return median_ms(fns, args.repeats, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="torch.compile the steps")
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = f"{device.type}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"# {where}{', compiled' if args.compile else ''}, median of {args.repeats}")

    step = optimizer_step_table(args, device)
    print("\n## optimizer step alone, 8 weights of 1024x1024")
    print("| optimizer | ms | vs Adam | vs SGD |")
    print("|---|---|---|---|")
    for name, ms in step.items():
        print(f"| {name} | {ms:.2f} | {ms / step['adam']:.2f}x | {ms / step['sgd']:.2f}x |")

    archs = ["fcn"] if args.skip_resnet else ["fcn", "resnet18"]
    tables = {arch: training_step_table(args, device, arch) for arch in archs}
    print("\n## training step (forward + backward + step)")
    header = " | ".join(f"{a} ms | {a} vs SGD" for a in archs)
    print(f"| optimizer | {header} |")
    print("|---|" + "---|---|" * len(archs))
    for name in tables[archs[0]]:
        cells = " | ".join(
            f"{tables[a][name]:.1f} | {tables[a][name] / tables[a]['sgd']:.2f}x" for a in archs
        )
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
