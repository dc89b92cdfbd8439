"""The gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018,
"An Empirical Model of Large-Batch Training", appendix A.1).

A gradient estimated from a batch of B samples has E|g_B|^2 = |G|^2 + tr(Sigma)/B,
so squared norms measured at two batch sizes B_small < B_big give unbiased
estimates of both terms:

    |G|^2      = (B_big |g_big|^2 - B_small |g_small|^2) / (B_big - B_small)
    tr(Sigma)  = (|g_small|^2 - |g_big|^2) / (1/B_small - 1/B_big)

Under data parallelism the workers' local gradients (B/n each) and the all-reduced
one (B) are both at hand, so the estimate is almost free: a DDP communication hook
reads each worker's local gradient norm on its way into the all-reduce. With one
worker the batch is split into two micro-batches. Each term is smoothed by a
bias-corrected moving average, and B_simple is their ratio.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks


class NoiseScale:
    """Moving averages of the unbiased |G|^2 and tr(Sigma) estimates (device tensors)."""

    def __init__(self, beta: float = 0.99):
        self.beta = beta
        self.g2 = self.trace = None
        self.steps = 0

    def update(
        self, small_sq: torch.Tensor, big_sq: torch.Tensor, b_small: float, b_big: float
    ) -> None:
        g2 = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
        trace = (small_sq - big_sq) / (1 / b_small - 1 / b_big)
        if self.g2 is None:
            self.g2, self.trace = torch.zeros_like(g2), torch.zeros_like(trace)
        self.g2.mul_(self.beta).add_(g2, alpha=1 - self.beta)
        self.trace.mul_(self.beta).add_(trace, alpha=1 - self.beta)
        self.steps += 1

    def state_dict(self) -> dict:
        """The averages (on the CPU) and their step count, for checkpoints. Under
        data parallelism each worker's averages are its own (of its local norms)."""
        g2, trace = (None if t is None else t.cpu() for t in (self.g2, self.trace))
        return {"beta": self.beta, "steps": self.steps, "g2": g2, "trace": trace}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.beta, self.steps = state["beta"], state["steps"]
        self.g2, self.trace = (
            None if t is None else t.to(device) for t in (state["g2"], state["trace"])
        )

    def estimates(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Bias-corrected (|G|^2, tr(Sigma)), averaged over data-parallel workers."""
        if self.g2 is None:
            return None
        correction = 1 - self.beta**self.steps
        both = torch.stack([self.g2, self.trace]) / correction
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(both, op=dist.ReduceOp.SUM)  # linear: the mean of the
            both /= dist.get_world_size()  # workers' averages is the average of means
        return both[0], both[1]

    def value(self) -> float | None:
        est = self.estimates()
        if est is None:
            return None
        g2, trace = (float(t) for t in est)
        return trace / g2 if g2 > 0 else None


class LocalGradNorm:
    """State of ``local_norm_hook``: this worker's squared local gradient norm."""

    def __init__(self, device: torch.device):
        self.sq = torch.zeros((), device=device, dtype=torch.float32)

    def take(self) -> torch.Tensor:
        value, self.sq = self.sq, torch.zeros_like(self.sq)
        return value


def local_norm_hook(state: LocalGradNorm, bucket):
    """DDP communication hook: adds the bucket's local squared gradient norm to
    ``state.sq``, then does DDP's usual averaging all-reduce.

    Register with ``ddp_model.register_comm_hook(LocalGradNorm(device), local_norm_hook)``.
    """
    state.sq += bucket.buffer().float().square().sum()
    return default_hooks.allreduce_hook(None, bucket)


def grad_sq_norm(params) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch._foreach_norm(grads)
    return torch.stack([n.float() for n in norms]).square().sum()
