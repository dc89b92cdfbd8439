"""Every optimizer agd-ray knows, one entry each: how to build it from its config,
which initialisation it wants, how its step is called, what it reports per step and
whether it has a learning rate, a schedule or a train/eval mode.

Adding an optimizer is adding an entry here (plus its tests): the config's valid
names, the CLI's messages and the training loop all read this table.

    entry = OPTIMIZERS[cfg.name]
    if entry.init == "orthogonal": orthogonal_init_(model)
    opt = entry.build(cfg, model)          # cfg: the validated OptimizerConfig
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from agd_ray.optim.agd import AGD
from agd_ray.optim.curvature import CurvatureStepOnePass
from agd_ray.optim.muon import muon_with_adamw
from agd_ray.optim.spectral import AGDSpectral


@dataclass(frozen=True)
class Entry:
    build: Callable[[Any, nn.Module], torch.optim.Optimizer]
    """(OptimizerConfig, model) -> optimizer; the model is unwrapped from DDP."""
    about: str
    init: Literal["orthogonal", "default"] = "default"
    """orthogonal: AGD's init (every (sub-)matrix semi-orthogonal, scaled by s_k);
    default: PyTorch's, as the paper keeps for its baselines."""
    lr: float | None = None
    """The default learning rate; None: the optimizer has none (and no schedule)."""
    lr_required: bool = False
    schedule: bool = True
    """Whether ``optimizer.schedule`` may be other than constant."""
    step_needs_loss: bool = False
    """``step(loss_fn=...)``: the batch loss as a function of the parameters."""
    step_takes_gradient: bool = False
    """``step(loss_fn=...)`` replaces the backward: it takes the gradient itself, from
    ``loss_fn`` (params -> (loss, output)), and returns (loss, output)."""
    metrics: tuple[str, ...] = ()
    """0-dim tensor attributes read after each step and logged (AGD: eta, G)."""
    eval_mode: bool = False
    """``train()`` before training, ``eval()`` before evaluation and checkpoints
    (schedule-free methods evaluate at their averaged point)."""
    defaults: tuple[tuple[str, Any], ...] = ()
    """Config fields whose default differs for this optimizer (e.g. Muon's momentum)."""


def _params(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _adam(cls: type | str = torch.optim.Adam, fields: tuple[str, ...] = (), **extra):
    """An Adam-family optimizer (lr, betas, eps, weight_decay, and ``fields`` of the
    config by the same names); ``cls`` may be "package.Class", imported when built."""

    def build(cfg, model):
        optimizer = cls
        if isinstance(cls, str):  # the optional packages load only when used
            module, _, name = cls.rpartition(".")
            optimizer = getattr(importlib.import_module(module), name)
        return optimizer(
            _params(model),
            lr=cfg.lr,
            betas=tuple(cfg.betas),
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            **{field: getattr(cfg, field) for field in fields},
            **extra,
        )

    return build


def _sgd(cfg, model):
    return torch.optim.SGD(
        _params(model),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
    )


def _curvature(along: str):
    def build(cfg, model):
        return CurvatureStepOnePass(
            _params(model),
            along=along,
            direction=cfg.direction,
            lam=cfg.lam,
            momentum=cfg.momentum,
            betas=tuple(cfg.betas),
            eps=cfg.eps,
            beta3=cfg.beta3,
            second_order=cfg.second_order,
        )

    return build


OPTIMIZERS: dict[str, Entry] = {
    "agd": Entry(
        lambda cfg, model: AGD.from_model(model, gain=cfg.gain),
        "the paper's AGD (biases and gains by role)",
        init="orthogonal",
        schedule=False,
        metrics=("eta", "G"),
    ),
    "agd_spectral": Entry(
        lambda cfg, model: AGDSpectral.from_model(model, gain=cfg.gain, ns_steps=cfg.ns_steps),
        "AGD's eta with Newton-Schulz-orthogonalised updates",
        init="orthogonal",
        schedule=False,
        metrics=("eta", "G"),
    ),
    "curvature": Entry(
        _curvature("current"),
        "de Gournay & Gossard's curvature-rescaled step (exact)",
        schedule=False,
        metrics=("curvature", "L", "rate"),
        step_needs_loss=True,
        step_takes_gradient=True,
    ),
    "curvature_onepass": Entry(
        _curvature("previous"),
        "the curvature step along the previous direction, in the gradient's pass",
        schedule=False,
        metrics=("curvature", "L", "rate"),
        step_needs_loss=True,
        step_takes_gradient=True,
    ),
    "sgd": Entry(_sgd, "torch.optim.SGD", lr=None, lr_required=True),
    "adam": Entry(_adam(), "torch.optim.Adam", lr=1e-3),
    "adamw": Entry(_adam(torch.optim.AdamW), "torch.optim.AdamW", lr=1e-3),
    "amsgrad": Entry(_adam(amsgrad=True), "torch.optim.Adam(amsgrad=True)", lr=1e-3),
    "muon": Entry(
        muon_with_adamw,
        "torch.optim.Muon on the hidden weight matrices, AdamW on the rest",
        lr=0.02,
        defaults=(("momentum", 0.95), ("nesterov", True), ("weight_decay", 0.1)),
    ),
    "prodigy": Entry(
        _adam("prodigyopt.Prodigy"),
        "prodigyopt.Prodigy (learning-rate free; lr scales its D)",
        lr=1.0,
    ),
    "schedulefree_adamw": Entry(
        _adam("schedulefree.AdamWScheduleFree", fields=("warmup_steps",)),
        "schedulefree.AdamWScheduleFree (no schedule; evaluates at its averaged point)",
        lr=2.5e-3,
        schedule=False,
        eval_mode=True,
    ),
}


def learning_rate_free(name: str) -> bool:
    """True for AGD, its variants and the curvature step: no learning rate to tune."""
    return OPTIMIZERS[name].lr is None and not OPTIMIZERS[name].lr_required


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` names, over the model's trainable parameters (roles,
    where the optimizer needs them, from the model's structure)."""
    return OPTIMIZERS[cfg.name].build(cfg, getattr(model, "module", model))
