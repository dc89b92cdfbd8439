"""Collectives every rank calls alike (no-ops in a single process): sums, the
first step any rank saw, whether any rank raised a flag, gathering to rank 0."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def first_on_any_rank(step: torch.Tensor) -> int:
    """The smallest of every rank's ``step`` (a host sync; an all-reduce when distributed)."""
    if dist.is_available() and dist.is_initialized():
        step = step.clone()
        dist.all_reduce(step, op=dist.ReduceOp.MIN)
    return int(step)


def any_rank(flag: bool, world: int, device: torch.device) -> bool:
    """True if ``flag`` holds on any rank (so that all ranks take the same branch)."""
    if world == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    return bool(all_reduce_sum(t).item() > 0)


def gather_to_rank0(obj: Any, rank: int, world: int) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0 (in rank order), None elsewhere; all ranks call it."""
    if world == 1:
        return [obj]
    gathered = [None] * world if rank == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered
