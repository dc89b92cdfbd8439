"""The curvature-rescaled step of de Gournay & Gossard (2022), "Adaptive scaling of
the learning rate by second order automatic differentiation".

    opt = CurvatureStep(model.parameters(), direction="adam", lam=0.5)
    loss.backward()
    opt.step(loss_fn=lambda params: criterion(functional_call(model, params, x), y))

A base optimizer (SGD, or Adam without its learning rate) proposes a direction d;
the step length along d comes from the loss's curvature along d on this batch:

    c     = <H d, d> / |d|^2           (H d by forward-over-reverse, torch.func.jvp of grad)
    c_avg = beta3 * c_avg + (1 - beta3) * c,  bias-corrected: c_hat = c_avg / (1 - beta3^t)
    L     = max(c_hat, c)
    r     = 2 <g, d> / (L |d|^2)
    theta <- theta - lam * r * d

On a quadratic, f(theta - t d) = f - t <g, d> + t^2/2 <H d, d>: the exact line
minimiser is t* = <g, d> / <H d, d>, which is lam = 1/2 (with L = c), and the loss
does not increase for t <= 2 t*, i.e. lam <= 1. Taking L >= the running average
shortens steps after a curvature drop. Where L <= 0 (no positive curvature along
d) the step is skipped. Under data parallelism, g and d are already all-reduced
and <H d, d> is averaged over ranks, so every rank takes the same step.

State: for direction "adam", Adam's two moments per parameter; "sgd" with momentum
keeps one buffer; plus the scalar curvature average. ``opt.curvature`` (c),
``opt.L`` and ``opt.rate`` (lam * r) are device tensors after each step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor
from torch.func import grad, jvp


class CurvatureStep(torch.optim.Optimizer):
    """See the module docstring. ``step(loss_fn=...)`` is required: ``loss_fn`` maps
    the list of this optimizer's parameter tensors (in order) to the batch loss."""

    def __init__(
        self,
        params,
        direction: str = "sgd",
        lam: float = 0.5,
        momentum: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        beta3: float = 0.9,
    ):
        if direction not in ("sgd", "adam"):
            raise ValueError(f"direction must be sgd or adam, got {direction!r}")
        if not lam > 0:
            raise ValueError(f"lam must be > 0, got {lam}")
        defaults = dict(momentum=momentum, betas=betas, eps=eps)
        super().__init__(params, defaults)
        self.direction, self.lam, self.beta3 = direction, lam, beta3
        self.t = 0
        self.c_avg: Tensor | None = None
        self.curvature = self.L = self.rate = torch.zeros(())

    def state_dict(self) -> dict:
        """torch's state (Adam's moments, momentum), plus the step count and the
        curvature average: a resumed run continues the same bias correction."""
        out = super().state_dict()
        out["curvature"] = {"t": self.t, "c_avg": self.c_avg}
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("curvature", {"t": 0, "c_avg": None})
        super().load_state_dict(state_dict)
        self.t, self.c_avg = extra["t"], extra["c_avg"]
        if self.c_avg is not None:
            self.c_avg = self.c_avg.to(self._params()[0].device)

    def _params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    @torch.no_grad()
    def _direction(self) -> list[Tensor]:
        """d for every parameter (zero where there is no gradient)."""
        out = []
        self.t += 1
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad if p.grad is not None else torch.zeros_like(p)
                state = self.state[p]
                if self.direction == "sgd":
                    if group["momentum"] > 0:
                        buf = state.setdefault("momentum", torch.zeros_like(p))
                        g = buf.mul_(group["momentum"]).add_(g)
                    out.append(g)
                    continue
                b1, b2 = group["betas"]
                m = state.setdefault("exp_avg", torch.zeros_like(p))
                v = state.setdefault("exp_avg_sq", torch.zeros_like(p))
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                m_hat = m / (1 - b1**self.t)
                v_hat = v / (1 - b2**self.t)
                out.append(m_hat / (v_hat.sqrt() + group["eps"]))
        return out

    def step(self, closure=None, *, loss_fn: Callable[[Sequence[Tensor]], Tensor] | None = None):
        if loss_fn is None:
            raise ValueError("CurvatureStep.step needs loss_fn (params -> loss) for H d")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = self._params()
        d = self._direction()
        primals = tuple(p.detach() for p in params)
        tangents = tuple(x.detach() for x in d)
        _, hd = jvp(grad(lambda ps: loss_fn(ps)), (primals,), (tangents,))
        with torch.no_grad():
            g = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            dhd = sum((h * x).sum() for h, x in zip(hd, d, strict=True)).float()
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(dhd)
                dhd /= dist.get_world_size()
            dd = sum(x.float().square().sum() for x in d)
            gd = sum((a.float() * b.float()).sum() for a, b in zip(g, d, strict=True))
            tiny = torch.finfo(torch.float32).tiny
            c = dhd / dd.clamp_min(tiny)
            prev = self.c_avg if self.c_avg is not None else torch.zeros_like(c)
            self.c_avg = self.beta3 * prev + (1 - self.beta3) * c
            c_hat = self.c_avg / (1 - self.beta3**self.t)
            L = torch.maximum(c_hat, c)
            r = torch.where(L > 0, 2 * gd / (L.clamp_min(tiny) * dd.clamp_min(tiny)), 0.0)
            rate = self.lam * r
            torch._foreach_add_(params, torch._foreach_mul(d, rate.to(params[0].dtype)), alpha=-1)
            self.curvature, self.L, self.rate = c, L, rate
        return loss
