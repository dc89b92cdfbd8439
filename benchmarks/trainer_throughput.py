"""Training throughput through Ray Train's TorchTrainer (one worker) against the
same model, data and optimizer in a plain PyTorch loop. Goal: >= 0.95x.

    uv run python benchmarks/trainer_throughput.py [--epochs 6] [--width 1024] [--depth 8]

Both sides train the FCN on MNIST-1D with AGD, batch 128, on the same number of
CPU threads (the Train worker is given all of them). Throughput is training
samples per second over an epoch's training pass (evaluation excluded on both
sides), the median over the epochs after the first; the plain loop runs once
before and once after the TorchTrainer, and its epochs are pooled. The TorchTrainer side is
``agd-ray train`` itself (``run_train``: checkpoints, reports, metrics on the
device); its Ray start-up is printed separately, not counted. With
``--noise-scale`` the loop also measures the gradient noise scale (two
micro-batches every 10th step), as it does by default.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def plain_loop(cfg, threads: int) -> list[float]:
    """The textbook loop: shuffle, slice, forward, loss, backward, step."""
    import torch

    from agd_ray.data import load_data
    from agd_ray.models import build_model
    from agd_ray.optim import AGD, orthogonal_init_
    from agd_ray.train.loop import seed_everything
    from agd_ray.train.step import loss_fn

    torch.set_num_threads(threads)
    seed_everything(cfg.train.seed)
    splits = load_data(cfg.data)
    x, y = splits.train.tensors
    model = orthogonal_init_(build_model(cfg.model, splits.spec))
    opt = AGD.from_model(model)
    criterion = loss_fn(cfg.train.loss, splits.spec.num_classes)
    rates = []
    batch = cfg.train.batch_size
    for _ in range(cfg.train.epochs):
        start = time.perf_counter()
        perm = torch.randperm(len(y))
        n = 0
        for i in range(0, len(y) - batch + 1, batch):  # full batches, as the sampler
            idx = perm[i : i + batch]
            opt.zero_grad(set_to_none=True)
            loss = criterion(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            n += len(idx)
        rates.append(n / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--noise-scale", action="store_true")
    args = parser.parse_args()

    import ray

    from agd_ray.config import load_config
    from agd_ray.train.trainer import run_train

    cfg = load_config(
        None,
        [
            "name=throughput",
            f"data.num_samples={args.samples}",
            f"model.depth={args.depth}",
            f"model.width={args.width}",
            f"train.epochs={args.epochs}",
            "train.batch_size=128",
            f"train.noise_scale={str(args.noise_scale).lower()}",
            f"scaling.cpus_per_worker={args.threads}",
            "wandb.mode=disabled",
        ],
    )
    before = plain_loop(cfg, args.threads)

    start = time.perf_counter()
    ray.init(num_cpus=args.threads, include_dashboard=False)
    ray_start = time.perf_counter() - start
    beside_ray = plain_loop(cfg, args.threads)  # the same loop, Ray's daemons idle beside it
    with tempfile.TemporaryDirectory() as out:
        outcome = run_train(cfg, out, echo=lambda s: None)
    ray.shutdown()
    if outcome.status != "completed":
        raise SystemExit(f"the TorchTrainer run {outcome.status}: {outcome.error}")
    trainer = [row["samples_per_s"] for row in outcome.history]
    after = plain_loop(cfg, args.threads)  # before and after: machine drift hits both
    plain = before[:1] + before[1:] + after[1:]

    p, t = statistics.median(plain[1:]), statistics.median(trainer[1:])
    print(
        f"FCN depth {args.depth} width {args.width}, MNIST-1D {args.samples} samples, "
        f"batch 128, AGD, {args.threads} threads, noise scale {'on' if args.noise_scale else 'off'}"
    )
    b = statistics.median(beside_ray[1:])

    def epochs(rates):
        return [round(r) for r in rates[1:]]

    print(f"plain PyTorch loop:          {p:10,.0f} samples/s  (epochs: {epochs(plain)})")
    print(f"  the same, Ray idle beside: {b:10,.0f} samples/s  (epochs: {epochs(beside_ray)})")
    print(f"TorchTrainer (1 worker):     {t:10,.0f} samples/s  (epochs: {epochs(trainer)})")
    print(f"ratio: {t / p:.3f}x  (goal >= 0.95); against the loop beside Ray: {t / b:.3f}x")
    print(f"Ray start-up {ray_start:.1f} s, not counted")


if __name__ == "__main__":
    main()
