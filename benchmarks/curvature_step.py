"""Training-step time of the curvature step, exact and one-pass, against plain steps.

    uv run python benchmarks/curvature_step.py [--repeats 10] [--rounds 3] [--width 1024]

One training step as the training loop takes it (``agd_ray.train.step``), on an FCN
(``--depth`` x ``--width``, MNIST-1D-sized inputs, batch ``--batch``), square loss:

- sgd, adam: forward, backward, torch's step (foreach);
- curvature_onepass (the loop's): c along the previous direction; "taylor": in the
  gradient's own forward (second-order forward mode), "reverse": by a backward of
  <g, u> through the gradient's kept graph;
- curvature (the loop's, the exact step's iterates): c along this step's direction;
  "taylor": a Taylor forward after the gradient's pass, "reverse": that pass's
  second backward;
- exact (``CurvatureStep``'s API): the ordinary backward, then c along d in a pass
  of the step's own.

Every round is the median of ``--repeats`` interleaved runs (machine noise hits the
steps alike); the ratios are printed per round and their median at the end. The
goal (issue 15): the one-pass step <= 2.5x a plain step.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from step_time import median_ms  # this folder's (run as a script)
from torch.func import functional_call

from agd_ray.models import FCN
from agd_ray.optim.curvature import CurvatureStep, CurvatureStepOnePass
from agd_ray.train.step import loss_fn

STEPS = {"sgd": ("sgd", None, None), "adam": ("adam", None, None)}
for _kind in ("onepass", "current", "exact"):
    for _method in ("taylor", "reverse"):
        for _direction in ("sgd", "adam"):
            _name = {"onepass": "curvature_onepass", "current": "curvature"}.get(_kind, _kind)
            STEPS[f"{_name} {_method} {_direction}"] = (_kind, _direction, _method)


def train_step(kind: str, direction: str | None, method: str | None, args, x, y):
    """A closure taking one training step of a fresh model with this optimizer."""
    torch.manual_seed(0)
    model = FCN(args.depth, args.width, x.shape[1], 10)
    params = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    criterion = loss_fn("mse", 10)

    def batch_loss(ps):  # params -> (loss, output), as the training loop's batch_loss_fn
        out = functional_call(model, dict(zip(names, ps, strict=True)), (x,))
        return criterion(out, y), out

    if kind in ("onepass", "current"):  # the loop's: the step takes the gradient
        along = "current" if kind == "current" else "previous"
        opt = CurvatureStepOnePass(
            params, along=along, direction=direction, lam=0.5, second_order=method
        )
        return lambda: opt.step(loss_fn=batch_loss)
    if kind == "exact":
        opt = CurvatureStep(params, direction=direction, lam=0.5, second_order=method)

        def step():
            opt.zero_grad(set_to_none=True)
            criterion(model(x), y).backward()
            opt.step(loss_fn=lambda ps: batch_loss(ps)[0])

        return step
    if kind == "sgd":
        opt = torch.optim.SGD(params, lr=1e-3, foreach=True)
    else:
        opt = torch.optim.Adam(params, lr=1e-4, foreach=True)

    def step():
        opt.zero_grad(set_to_none=True)
        criterion(model(x), y).backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = torch.randn(args.batch, 40), torch.randint(0, 10, (args.batch,))
    fns = {name: train_step(*spec, args, x, y) for name, spec in STEPS.items()}
    print(
        f"# FCN {args.depth}x{args.width}, batch {args.batch}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}; median of {args.repeats} per round"
    )
    ratios = {name: [] for name in fns}
    for r in range(args.rounds):
        ms = median_ms(fns, args.repeats, torch.device("cpu"))
        for name in fns:
            ratios[name].append(ms[name] / ms["sgd"])
        print(f"round {r + 1}: " + ", ".join(f"{n} {ms[n]:.1f} ms" for n in fns))
    print("\n| step | vs SGD step (median of rounds) | rounds | vs Adam step |")
    print("|---|---|---|---|")
    for name, rs in ratios.items():
        vs_adam = statistics.median(a / b for a, b in zip(rs, ratios["adam"], strict=True))
        each = ", ".join(f"{v:.2f}" for v in rs)
        print(f"| {name} | {statistics.median(rs):.2f}x | {each} | {vs_adam:.2f}x |")


if __name__ == "__main__":
    main()
