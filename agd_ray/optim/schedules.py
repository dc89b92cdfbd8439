"""Learning-rate schedules for the optimizers that have a learning rate (torch's
own classes, stepped once per epoch)."""

from __future__ import annotations

import torch


def build_scheduler(
    cfg, optimizer: torch.optim.Optimizer, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The schedule ``cfg.schedule`` names (stepped once per epoch), or None for a
    constant learning rate. ``cfg``: the validated OptimizerConfig."""
    sched = torch.optim.lr_scheduler
    if cfg.schedule == "constant":  # the only choice without a learning rate
        return None
    if cfg.schedule == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=epochs)
    if cfg.schedule == "step":
        return sched.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.schedule == "warm_restarts":
        return sched.CosineAnnealingWarmRestarts(
            optimizer, T_0=cfg.restart_period, T_mult=cfg.restart_mult
        )
    raise ValueError(f"unknown schedule {cfg.schedule!r}")  # the config refuses it first
