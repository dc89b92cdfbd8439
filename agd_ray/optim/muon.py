"""Muon as its authors use it: ``torch.optim.Muon`` on the hidden weight matrices,
AdamW on everything else (the first and last weight layers, biases, gains, and conv
kernels, which torch's Muon does not take), stepped as one optimizer so that the
loop, the learning-rate schedule and the checkpoint see one object."""

from __future__ import annotations

import torch
from torch import nn

from agd_ray.optim.roles import execution_order


class MuonWithAdamW(torch.optim.Optimizer):
    """Steps each of its optimizers; its param_groups are theirs (the same dicts),
    so a scheduler scales Muon's and AdamW's learning rates together."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers
        super().__init__([g for o in optimizers for g in o.param_groups], defaults={})

    @torch.no_grad()
    def step(self, closure=None):
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        for optimizer, state in zip(self.optimizers, state_dict["optimizers"], strict=True):
            optimizer.load_state_dict(state)


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The 2-D weights of every Linear layer but the first and last the forward pass
    calls."""
    modules = dict(model.named_modules())
    order = execution_order(model)
    hidden = [modules[name] for name in order[1:-1]]
    return [m.weight for m in hidden if m.weight.ndim == 2 and m.weight.requires_grad]


def muon_with_adamw(cfg, model: nn.Module) -> MuonWithAdamW:
    """Muon (cfg.lr, momentum, nesterov, weight_decay) on the hidden matrices, AdamW
    (cfg.adamw_lr, betas, eps, weight_decay) on the rest."""
    matrices = hidden_matrices(model)
    chosen = {id(p) for p in matrices}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]
    optimizers = []
    if matrices:
        optimizers.append(
            torch.optim.Muon(
                matrices,
                lr=cfg.lr,
                momentum=cfg.momentum,
                nesterov=cfg.nesterov,
                weight_decay=cfg.weight_decay,
            )
        )
    if rest:
        optimizers.append(
            torch.optim.AdamW(
                rest,
                lr=cfg.adamw_lr,
                betas=tuple(cfg.betas),
                eps=cfg.eps,
                weight_decay=cfg.weight_decay,
            )
        )
    return MuonWithAdamW(optimizers)
