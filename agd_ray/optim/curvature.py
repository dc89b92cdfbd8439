"""The curvature-rescaled step of de Gournay & Gossard (2022), "Adaptive scaling of
the learning rate by second order automatic differentiation", exact or in one pass.

    opt = CurvatureStep(model.parameters(), direction="adam", lam=0.5)
    loss.backward()
    opt.step(loss_fn=lambda params: criterion(functional_call(model, params, x), y))

    opt = CurvatureStepOnePass(model.parameters(), along="previous", direction="adam")
    loss, out = opt.step(loss_fn=lambda params: (criterion(out := f(params), y), out))

A base optimizer (SGD, or Adam without its learning rate) proposes a direction d;
the step length along d comes from the loss's curvature on this batch:

    c     = <H u, u> / |u|^2
    c_avg = beta3 * c_avg + (1 - beta3) * c,  bias-corrected: c_hat = c_avg / (1 - beta3^t)
    L     = max(c_hat, c)
    r     = 2 <g, d> / (L |d|^2)
    theta <- theta - lam * r * d

<H u, u> (``agd_ray.optim.second_order``), with ``second_order``:

- "taylor" (the default): the second Taylor coefficient of the loss along u, carried
  through a forward pass (``agd_ray.optim.taylor``): no backward of its own, and the
  gradient's own forward when u is known before the batch;
- "reverse": H u by a backward of <g, u> through the gradient's kept graph
  (reverse-over-reverse), then its dot with u. A model with an operation that Taylor
  mode has no rule for falls back to it, with a warning.

``CurvatureStep`` (exact, u = d) keeps torch's optimizer API: after the ordinary
backward, its ``step`` computes c along d in a pass of its own. ``CurvatureStepOnePass``
takes the gradient itself (its ``step`` replaces the backward), either

- ``along="previous"`` (the training loop's ``curvature_onepass``): u = d_{t-1}, the
  previous step's direction, known before the batch, so in Taylor mode c comes from
  the gradient's forward: 2.1x a plain step's time (``benchmarks/curvature_step.py``).
  The exact step while the curvature along the path changes slowly; its first step,
  with no previous direction, is the exact one;
- ``along="current"`` (the loop's ``curvature``): u = d, this step's direction, computed
  from g: the exact step's iterates, c by a Taylor forward after the gradient's pass
  (or, "reverse", by the second backward of that pass, one forward instead of two).

Every pass after the gradient's leaves batch norms' running statistics alone: they
move once per step.

On a quadratic, f(theta - t d) = f - t <g, d> + t^2/2 <H d, d>: the exact line
minimiser is t* = <g, d> / <H d, d>, which is lam = 1/2 (with L = c), and the loss
does not increase for t <= 2 t*, i.e. lam <= 1. Taking L >= the running average
shortens steps after a curvature drop. Where L <= 0 (no positive curvature along
u) the step is skipped. Under data parallelism g and d are the same on every rank
(the exact step's g all-reduced by DDP, the one-pass step's here) and <H u, u> is
averaged over ranks, so every rank takes the same step.

State: for direction "adam", Adam's two moments per parameter; "sgd" with momentum
keeps one buffer; the one-pass step along the previous direction keeps it; plus the scalar
curvature average. ``opt.curvature`` (c), ``opt.L`` and ``opt.rate`` (lam * r) are
device tensors after each step.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from agd_ray.optim.second_order import (
    frozen_stats,
    gradient_pass,
    mean_over_ranks,
    sum_of_dots,
    uhu_forward,
)
from agd_ray.optim.taylor import LossFn, TaylorUnsupported, taylor_pass

STALL_CHECK_EVERY = 50
"""Steps between the checks for a run of skipped steps (one warning each time)."""

METHODS = ("taylor", "reverse")
"""How <H u, u> is computed (``agd_ray.optim.second_order``)."""


class CurvatureStep(torch.optim.Optimizer):
    """See the module docstring. ``step(loss_fn=...)`` is required: ``loss_fn`` maps
    the list of this optimizer's parameter tensors (in order) to the batch loss; the
    gradients are the backward's, in ``p.grad``."""

    def __init__(
        self,
        params,
        direction: str = "sgd",
        lam: float = 0.5,
        momentum: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        beta3: float = 0.9,
        second_order: str = "taylor",
    ):
        if direction not in ("sgd", "adam"):
            raise ValueError(f"direction must be sgd or adam, got {direction!r}")
        if not lam > 0:
            raise ValueError(f"lam must be > 0, got {lam}")
        if second_order not in METHODS:
            raise ValueError(f"second_order must be taylor or reverse, got {second_order!r}")
        defaults = dict(momentum=momentum, betas=betas, eps=eps)
        super().__init__(params, defaults)
        self.direction, self.lam, self.beta3 = direction, lam, beta3
        self.second_order = second_order
        self.t = 0
        self.c_avg: Tensor | None = None
        self.curvature = self.L = self.rate = torch.zeros(())
        self.skipped = torch.zeros((), dtype=torch.int64)  # steps skipped in a row (L <= 0)

    def state_dict(self) -> dict:
        """torch's state (Adam's moments, momentum), plus the step count and the
        curvature average: a resumed run continues the same bias correction."""
        out = super().state_dict()
        out["curvature"] = {"t": self.t, "c_avg": self.c_avg, "second_order": self.second_order}
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("curvature", {"t": 0, "c_avg": None})
        super().load_state_dict(state_dict)
        self.t, self.c_avg = extra["t"], extra["c_avg"]
        if extra.get("second_order") == "reverse":  # a fallback (or the choice) stays
            self.second_order = "reverse"
        if self.c_avg is not None:
            self.c_avg = self.c_avg.to(self._params()[0].device)

    def _params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    @torch.no_grad()
    def _direction(self, grads: Sequence[Tensor]) -> list[Tensor]:
        """d for every parameter from its gradient (in ``_params`` order), one foreach
        op per pass over a group: SGD's g or momentum buffer (updated in place), or
        Adam's m_hat / (sqrt(v_hat) + eps)."""
        out = []
        self.t += 1
        grads = iter(grads)
        for group in self.param_groups:
            params = group["params"]
            g = [next(grads) for _ in params]

            def buffers(key, params=params):  # this group's state tensors, made at first use
                return [self.state[p].setdefault(key, torch.zeros_like(p)) for p in params]

            if self.direction == "sgd":
                if group["momentum"] > 0:
                    bufs = buffers("momentum")
                    torch._foreach_mul_(bufs, group["momentum"])
                    torch._foreach_add_(bufs, g)
                    g = bufs
                out += g
                continue
            b1, b2 = group["betas"]
            m, v = buffers("exp_avg"), buffers("exp_avg_sq")
            torch._foreach_lerp_(m, g, 1 - b1)
            torch._foreach_mul_(v, b2)
            torch._foreach_addcmul_(v, g, g, value=1 - b2)
            denom = torch._foreach_div(v, 1 - b2**self.t)  # v_hat
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, group["eps"])
            d = torch._foreach_div(m, 1 - b1**self.t)  # m_hat
            torch._foreach_div_(d, denom)
            out += d
        return out

    @torch.no_grad()
    def _rescaled_step(self, params: list[Tensor], g: list[Tensor], d: list[Tensor], c: Tensor):
        """c_avg, L = max(c_hat, c), r = 2 <g, d> / (L |d|^2), theta <- theta - lam r d."""
        tiny = torch.finfo(torch.float32).tiny
        dd, gd = sum_of_dots(d, d), sum_of_dots(g, d)
        prev = self.c_avg if self.c_avg is not None else torch.zeros_like(c)
        self.c_avg = self.beta3 * prev + (1 - self.beta3) * c
        c_hat = self.c_avg / (1 - self.beta3**self.t)
        L = torch.maximum(c_hat, c)
        r = torch.where(L > 0, 2 * gd / (L.clamp_min(tiny) * dd.clamp_min(tiny)), 0.0)
        rate = self.lam * r
        torch._foreach_addcmul_(params, d, [rate.to(params[0].dtype)] * len(d), value=-1)
        self.curvature, self.L, self.rate = c, L, rate
        self.skipped = torch.where(L > 0, 0, self.skipped.to(L.device) + 1)
        if self.t % STALL_CHECK_EVERY == 0 and int(self.skipped) >= STALL_CHECK_EVERY:
            warnings.warn(  # one host sync per STALL_CHECK_EVERY steps
                f"curvature step: no positive curvature along the step's direction for the "
                f"last {int(self.skipped)} steps (L <= 0), so each was skipped and the weights "
                "have not moved in that time",
                stacklevel=3,
            )

    @torch.no_grad()
    def _curvature(self, uhu: Tensor, u: list[Tensor]) -> Tensor:
        """c = <H u, u> / |u|^2, <H u, u> averaged over ranks."""
        uhu = mean_over_ranks(uhu.float())
        return uhu / sum_of_dots(u, u).float().clamp_min(torch.finfo(torch.float32).tiny)

    def _reverse_instead(self, error: TaylorUnsupported) -> None:
        """From now on, <H u, u> by reverse-over-reverse (said once)."""
        warnings.warn(
            f"curvature step: {error} in this model; <H u, u> by reverse-over-reverse "
            "from now on (slower; optimizer.second_order: reverse says so up front)",
            stacklevel=3,
        )
        self.second_order = "reverse"

    def _curvature_along(self, loss_fn: LossFn, params: list[Tensor], u: list[Tensor]) -> Tensor:
        """c along u from a pass of its own (batch norms' running statistics untouched)."""
        if self.second_order == "taylor":
            try:
                return self._curvature(uhu_forward(loss_fn, params, u, "taylor"), u)
            except TaylorUnsupported as error:
                self._reverse_instead(error)
        return self._curvature(uhu_forward(loss_fn, params, u, "reverse"), u)

    def step(self, closure=None, *, loss_fn: LossFn | None = None):
        if loss_fn is None:
            raise ValueError("CurvatureStep.step needs loss_fn (params -> loss) for H d")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = self._params()
        g = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        d = self._direction(g)
        self._rescaled_step(params, g, d, self._curvature_along(loss_fn, params, d))
        return loss


class CurvatureStepOnePass(CurvatureStep):
    """The curvature step in the pass that takes the gradient (module docstring):
    ``step(loss_fn=...)`` replaces the backward (no ``loss.backward()`` before it;
    ``p.grad`` is neither read nor set) and returns ``loss_fn``'s value (e.g.
    (loss, output)) at the parameters before the step, detached.

    ``along="previous"``: c along the previous step's direction, known before the
    batch (the first step, with none yet, takes c along d as ``current`` does).
    ``along="current"``: c along this step's direction d, computed from the gradient:
    the exact step (``CurvatureStep``'s iterates)."""

    def __init__(self, params, along: str = "previous", **kwargs):
        if along not in ("previous", "current"):
            raise ValueError(f"along must be previous or current, got {along!r}")
        super().__init__(params, **kwargs)
        self.along = along

    def step(self, closure=None, *, loss_fn: LossFn | None = None):
        if loss_fn is None:
            raise ValueError("CurvatureStepOnePass.step needs loss_fn (params -> loss)")
        params = self._params()
        prev = [self.state[p].get("direction") for p in params]
        in_pass = self.along == "previous" and not any(u is None for u in prev)
        taylor, hvp = self.second_order == "taylor", None
        if in_pass and taylor:  # c along d_{t-1} in the gradient's own forward
            try:
                value, g, uhu = taylor_pass(loss_fn, params, prev)
            except TaylorUnsupported as error:  # a model that took another path
                self._reverse_instead(error)
                with frozen_stats():  # its forward has run, in part
                    return self.step(loss_fn=loss_fn)
        else:  # reverse-over-reverse keeps the graph for H u; Taylor mode needs none
            value, g, hvp = gradient_pass(loss_fn, params, keep_graph=not taylor)
        with torch.no_grad():
            if dist.is_available() and dist.is_initialized():  # DDP's all-reduce of g
                flat = mean_over_ranks(torch._utils._flatten_dense_tensors(g))
                g = list(torch._utils._unflatten_dense_tensors(flat, g))
            if in_pass:  # c from d_{t-1} before the direction update (a momentum buffer is it)
                if hvp is not None:
                    uhu = sum_of_dots(hvp(prev), prev)
                c = self._curvature(uhu, prev)
                d = self._direction(g)
            else:  # c along this step's d
                d = self._direction(g)
                if hvp is not None:  # by the pass's second backward
                    c = self._curvature(sum_of_dots(hvp(d), d), d)
                else:  # by a Taylor forward of its own
                    c = self._curvature_along(loss_fn, params, d)
            self._rescaled_step(params, g, d, c)
            if self.along == "previous":
                for p, u in zip(params, d, strict=True):
                    self.state[p]["direction"] = u
        return value
