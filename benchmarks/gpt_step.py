"""Tokens per second of a GPT training step (forward, backward, optimizer step)
under AGD, spectral AGD, AdamW and Muon, measured side by side in one process on
the same model and batch, interleaved round by round so that machine noise hits
every optimizer alike.

    uv run python benchmarks/gpt_step.py [--depth 4] [--width 128] [--context 64]
        [--batch 32] [--rounds 5] [--steps 10] [--device cpu|cuda] [--bf16]

Prints, per optimizer, the median tokens/s over the rounds and its ratio to AdamW's,
and the optimizer step alone (ms) next to the whole step. Runs where torch runs:
on a GPU machine it needs only torch and agd_ray's model and optimizers.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

from agd_ray.config import OptimizerConfig
from agd_ray.models import GPT, GPTConfig
from agd_ray.optim import build_optimizer, orthogonal_init_

OPTIMIZERS = {
    "agd": {},
    "agd_spectral": {},
    "adamw": {"lr": 3e-3, "weight_decay": 0.1},
    "muon": {"lr": 0.02},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(model, optimizer, tokens, steps: int, bf16: bool) -> tuple[float, float]:
    """(seconds per whole step, seconds per optimizer step), over ``steps`` steps."""
    device = tokens.device
    total = opt_time = 0.0
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(tokens[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sync(device)
        mid = time.perf_counter()
        optimizer.step()
        sync(device)
        end = time.perf_counter()
        total += end - start
        opt_time += end - mid
    return total / steps, opt_time / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="forward under bf16 autocast")
    args = p.parse_args()
    device = torch.device(args.device)
    cfg = GPTConfig(args.depth, args.width, max(1, args.width // 64), args.context, args.vocab)
    tokens = torch.randint(0, args.vocab, (args.batch, args.context + 1), device=device)
    runs = {}
    for name, kwargs in OPTIMIZERS.items():
        torch.manual_seed(0)
        model = GPT(cfg).to(device)
        if name.startswith("agd"):
            orthogonal_init_(model)
        optimizer = build_optimizer(OptimizerConfig(name=name, **kwargs), model)
        time_steps(model, optimizer, tokens, 2, args.bf16)  # warm-up
        runs[name] = (model, optimizer, [], [])
    for _ in range(args.rounds):  # interleaved: noise hits every optimizer alike
        for model, optimizer, whole, opt in runs.values():
            step_s, opt_s = time_steps(model, optimizer, tokens, args.steps, args.bf16)
            whole.append(step_s)
            opt.append(opt_s)
    n_params = sum(p.numel() for p in runs["agd"][0].parameters())
    print(
        f"GPT depth {args.depth} width {args.width} context {args.context} batch {args.batch}"
        f" ({n_params / 1e6:.2f}M weights) on {device}"
        f"{' bf16' if args.bf16 else ''}, {torch.get_num_threads()} threads; medians of "
        f"{args.rounds} rounds x {args.steps} steps"
    )
    base = statistics.median(runs["adamw"][2])
    tokens_per_step = args.batch * args.context
    for name, (_, _, whole, opt) in runs.items():
        step_s = statistics.median(whole)
        print(
            f"  {name:<13} {tokens_per_step / step_s:>10,.0f} tokens/s  "
            f"{base / step_s:5.2f}x AdamW's  step {1e3 * step_s:7.1f} ms  "
            f"optimizer {1e3 * statistics.median(opt):6.2f} ms"
        )


if __name__ == "__main__":
    main()
