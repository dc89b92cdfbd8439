"""Build an optimizer from its config: AGD and its variants, the curvature-rescaled
step, or one of torch's own baseline classes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from agd_ray.optim.agd import AGD
from agd_ray.optim.curvature import CurvatureStep
from agd_ray.optim.spectral import AGDSpectral

if TYPE_CHECKING:
    from agd_ray.config import OptimizerConfig

OPTIMIZERS = ("agd", "agd_spectral", "curvature", "sgd", "adam", "adamw", "amsgrad")


def build_optimizer(cfg: OptimizerConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AGD (each parameter's role from the model's structure), spectral AGD, the
    curvature step, or a torch baseline with the config's hyperparameters."""
    model = getattr(model, "module", model)  # DDP: the roles come from the wrapped model
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "agd":
        return AGD.from_model(model, gain=cfg.gain)
    if cfg.name == "agd_spectral":
        return AGDSpectral.from_model(model, gain=cfg.gain, ns_steps=cfg.ns_steps)
    if cfg.name == "curvature":
        return CurvatureStep(
            params,
            direction=cfg.direction,
            lam=cfg.lam,
            momentum=cfg.momentum,
            betas=tuple(cfg.betas),
            eps=cfg.eps,
            beta3=cfg.beta3,
        )
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    adam_kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    if cfg.name == "adam":
        return torch.optim.Adam(params, weight_decay=cfg.weight_decay, **adam_kwargs)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, weight_decay=cfg.weight_decay, **adam_kwargs)
    if cfg.name == "amsgrad":
        return torch.optim.Adam(params, weight_decay=cfg.weight_decay, amsgrad=True, **adam_kwargs)
    raise ValueError(f"unknown optimizer {cfg.name!r}; valid: {', '.join(OPTIMIZERS)}")


SCHEDULES = ("constant", "cosine", "step", "warm_restarts")


def build_scheduler(
    cfg: OptimizerConfig, optimizer: torch.optim.Optimizer, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The baseline's learning-rate schedule (stepped once per epoch), or None."""
    sched = torch.optim.lr_scheduler
    if cfg.schedule == "constant":  # the only choice for agd, agd_spectral, curvature
        return None
    if cfg.schedule == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=epochs)
    if cfg.schedule == "step":
        return sched.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.schedule == "warm_restarts":
        return sched.CosineAnnealingWarmRestarts(
            optimizer, T_0=cfg.restart_period, T_mult=cfg.restart_mult
        )
    raise ValueError(f"unknown schedule {cfg.schedule!r}; valid: {', '.join(SCHEDULES)}")
