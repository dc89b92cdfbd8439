"""One training step and one epoch of them.

``train_step``: forward, backward, optimizer step; the gradient-noise-scale
measurement plugs in around the backward pass (two micro-batches with one worker,
a DDP hook's local norms with several). ``train_epoch``: a pass over this worker's
slices of the global batches, with metrics kept on the device and a divergence
check every ``DIVERGENCE_CHECK_EVERY`` steps.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from agd_ray.config import ExperimentConfig
from agd_ray.optim import Entry
from agd_ray.train.batches import GlobalBatchSampler, train_batches
from agd_ray.train.distributed import all_reduce_sum, first_on_any_rank, unwrap
from agd_ray.train.noise import LocalGradNorm, NoiseScale, grad_sq_norm, local_norm_hook
from agd_ray.train.session import Session
from agd_ray.train.wandb_logger import WandbLogger


def loss_fn(kind: str, num_classes: int):
    """Square loss against one-hot targets scaled by sqrt(num_classes), or cross-entropy
    (for a language model's (batch, T, vocab) logits: the mean over every token)."""
    if kind == "xent":

        def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

        return cross_entropy
    target_scale = math.sqrt(num_classes)

    def square_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # the mean of squares, as F.mse_loss(out, target)
        target = F.one_hot(y, num_classes).to(out.dtype) * target_scale
        return (out - target).square().mean()

    return square_loss


@dataclass
class Parts:
    """What one training step needs, built once per run."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    entry: Entry  # the registry's: how to step it, what it reports, train/eval modes
    criterion: Callable
    device: torch.device
    logger: WandbLogger
    noise: NoiseScale | None = None
    local_norm: LocalGradNorm | None = None  # DDP hook: local |g|^2 (world > 1)
    precision: str = "fp32"  # train.precision: bf16 runs the forward under autocast

    def forward_context(self):
        """Where the forward pass and the loss run: bf16 autocast, or as they are.
        Gradients, weights and the optimizer stay in fp32 either way."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def micro_batches(self) -> bool:
        """One worker measuring the noise scale: two micro-batches per step."""
        return self.noise is not None and self.local_norm is None


def setup_noise_scale(cfg: ExperimentConfig, model: nn.Module, session: Session):
    """(NoiseScale, LocalGradNorm hook or None), or (None, None) when not measured."""
    if not cfg.train.noise_scale:
        return None, None
    if session.world > 1 and hasattr(model, "register_comm_hook"):
        hook = LocalGradNorm(session.device)
        model.register_comm_hook(hook, local_norm_hook)
        return NoiseScale(), hook
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return None, None  # micro-batches would change the BatchNorm statistics
    return NoiseScale(), None


def train_step(parts: Parts, x: torch.Tensor, y: torch.Tensor, measure: bool = True):
    """Forward, backward (measuring the noise scale on the way, with one worker only
    when ``measure``), optimizer step. Returns (loss, output), both on the device."""
    model, criterion = parts.model, parts.criterion
    params = [p for g in parts.optimizer.param_groups for p in g["params"]]
    parts.optimizer.zero_grad(set_to_none=True)
    if parts.entry.step_takes_gradient:  # its one pass is the forward and backward
        loss, out = parts.optimizer.step(loss_fn=batch_loss_fn(parts, x, y, live=True))
        return loss, out
    half = len(y) // 2
    if measure and parts.micro_batches and half > 0 and len(y) % 2 == 0:
        with parts.forward_context():
            out1 = model(x[:half])
            loss1 = criterion(out1, y[:half])
        loss1.backward()
        first = [None if p.grad is None else p.grad.clone() for p in params]
        sq1 = grad_sq_norm(params)
        parts.optimizer.zero_grad(set_to_none=True)
        with parts.forward_context():
            out2 = model(x[half:])
            loss2 = criterion(out2, y[half:])
        loss2.backward()
        sq2 = grad_sq_norm(params)
        for p, g in zip(params, first, strict=True):  # the whole batch's mean gradient
            if g is not None:
                p.grad = g.mul_(0.5) if p.grad is None else p.grad.add_(g).mul_(0.5)
        parts.noise.update((sq1 + sq2) / 2, grad_sq_norm(params), half, len(y))
        loss, out = (loss1.detach() + loss2.detach()) / 2, torch.cat([out1, out2])
    else:
        with parts.forward_context():
            out = model(x)
            loss = criterion(out, y)
        loss.backward()
        if parts.local_norm is not None:
            world = dist.get_world_size()
            local = len(y)
            parts.noise.update(parts.local_norm.take(), grad_sq_norm(params), local, local * world)
    if parts.entry.step_needs_loss:
        parts.optimizer.step(loss_fn=batch_loss_fn(parts, x, y))
    else:
        parts.optimizer.step()
    return loss.detach(), out.detach()


def batch_loss_fn(parts: Parts, x: torch.Tensor, y: torch.Tensor, live: bool = False):
    """The batch loss as a function of the optimizer's parameter tensors (in order),
    for the curvature step's H d. Buffers are copies (BatchNorm's running statistics
    are not updated a second time), unless ``live``: then the function is the step's
    only forward, updates them, and returns (loss, output)."""
    net = unwrap(parts.model)
    names = {id(p): n for n, p in net.named_parameters()}
    order = [names[id(p)] for g in parts.optimizer.param_groups for p in g["params"]]
    buffers = dict(net.named_buffers())
    if not live:
        buffers = {n: b.clone() for n, b in buffers.items()}

    def loss_of(params):
        state = {**buffers, **dict(zip(order, params, strict=True))}
        with parts.forward_context():
            out = torch.func.functional_call(net, state, (x,))
            loss = parts.criterion(out, y)
        return (loss, out) if live else loss

    return loss_of


DIVERGENCE_CHECK_EVERY = 50
"""Steps between the (all-ranks) checks for a non-finite loss inside an epoch: a
diverged run stops within this many steps, at one host sync per check."""


def train_epoch(
    cfg: ExperimentConfig, parts: Parts, dataset, sampler: GlobalBatchSampler, step0: int
) -> tuple[dict[str, Any], int, int]:
    """One pass -> (metrics, steps, samples). Metrics accumulate on the device and are
    read once at the end (no host sync per step, except when logging to W&B).

    A non-finite loss, or non-finite weights at the end, ends the epoch early; the
    row's ``diverged_step`` is then the global step at which it was first seen."""
    parts.model.train()
    device = parts.device
    # per prediction: a sample's, or (language models) a token's
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    samples = 0
    never = torch.iinfo(torch.int64).max
    first_bad = torch.full((), never, device=device, dtype=torch.int64)  # global step
    etas: list[torch.Tensor] = []
    has_eta = "eta" in parts.entry.metrics  # AGD and its variants: eta per epoch
    steps = 0
    for x, y in train_batches(dataset, sampler, cfg.data.loader_workers, device):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        measure = (step0 + steps) % cfg.train.noise_scale_every == 0
        loss, out = train_step(parts, x, y, measure)
        steps += 1
        first_bad = torch.where(torch.isfinite(loss), first_bad, first_bad.clamp_max(step0 + steps))
        loss_sum += loss * y.numel()
        correct += (out.argmax(-1) == y).sum()
        count += y.numel()
        samples += len(y)
        if has_eta:
            etas.append(parts.optimizer.eta.clone())  # step() overwrites it in place
        if parts.logger.active and (step0 + steps) % parts.logger.every == 0:
            metrics = {"train/loss": float(loss)}
            for name in parts.entry.metrics:  # 0-dim tensors the step wrote
                metrics[f"train/{name}"] = float(getattr(parts.optimizer, name))
            parts.logger.log_step(step0 + steps, metrics)
        if steps % DIVERGENCE_CHECK_EVERY == 0 and first_on_any_rank(first_bad) != never:
            break  # every rank sees the same minimum and stops at the same step
    weights_finite = torch.stack(
        [torch.isfinite(p).all() for g in parts.optimizer.param_groups for p in g["params"]]
    ).all()
    first_bad = torch.where(weights_finite, first_bad, first_bad.clamp_max(step0 + steps))
    first_bad = first_on_any_rank(first_bad)
    n_samples = torch.tensor(float(samples), device=device, dtype=torch.float64)
    totals = all_reduce_sum(torch.stack([loss_sum, correct, count, n_samples])).tolist()
    row: dict[str, Any] = {
        "train_loss": totals[0] / totals[2] if totals[2] else float("nan"),
        "train_acc": totals[1] / totals[2] if totals[2] else float("nan"),
        "diverged_step": None if first_bad == never else first_bad,
    }
    if etas:
        eta = torch.stack(etas).float()
        row.update(eta_mean=eta.mean().item(), eta_min=eta.min().item(), eta_max=eta.max().item())
    else:
        row.update(eta_mean=None, eta_min=None, eta_max=None)
    row["noise_scale"] = parts.noise.value() if parts.noise is not None else None
    return row, steps, int(totals[3])
