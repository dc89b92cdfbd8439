"""The curvature-rescaled step of de Gournay & Gossard (2022), "Adaptive scaling of
the learning rate by second order automatic differentiation", exact or in one pass.

    opt = CurvatureStep(model.parameters(), direction="adam", lam=0.5)
    loss.backward()
    opt.step(loss_fn=lambda params: criterion(functional_call(model, params, x), y))

    opt = CurvatureStepOnePass(model.parameters(), along="current", direction="adam")
    loss, out = opt.step(loss_fn=lambda params: (criterion(out := f(params), y), out))

A base optimizer (SGD, or Adam without its learning rate) proposes a direction d;
the step length along d comes from the loss's curvature on this batch:

    c     = <H u, u> / |u|^2          (H u by reverse-over-reverse: a second backward,
                                        of <g, u>, through the gradient's own)
    c_avg = beta3 * c_avg + (1 - beta3) * c,  bias-corrected: c_hat = c_avg / (1 - beta3^t)
    L     = max(c_hat, c)
    r     = 2 <g, d> / (L |d|^2)
    theta <- theta - lam * r * d

``CurvatureStep`` (exact, u = d) keeps torch's optimizer API: after the ordinary
backward, its ``step`` runs a second forward, the gradient's backward kept
differentiable, then the backward of <g, d>. ``CurvatureStepOnePass`` takes the
gradient itself (its ``step`` replaces the backward): one forward and those two
backwards, with u chosen between them, either

- ``along="current"``: u = d, this step's direction, computed from g: the exact
  step's iterates with one forward instead of two (the training loop's
  ``curvature``; 3.0-3.4x an SGD step against 4.1-4.4x, ``benchmarks/curvature_step.py``);
- ``along="previous"``: u = d_{t-1}, the previous step's direction (the loop's
  ``curvature_onepass``): the exact step while the curvature along the path changes
  slowly; its first step, with no previous direction, is the exact one. It costs what
  ``current`` does: choosing u before the pass saves nothing in reverse-over-reverse.

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

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

LossFn = Callable[[Sequence[Tensor]], Tensor | tuple[Tensor, ...]]
"""params -> loss, or -> (loss, anything else, e.g. the model's output)."""


HVP = Callable[[Sequence[Tensor]], list[Tensor]]
"""u -> H u, by a backward through a kept gradient graph."""


def gradient_pass(
    loss_fn: LossFn, params: Sequence[Tensor], keep_graph: bool
) -> tuple[Tensor | tuple[Tensor, ...], list[Tensor], HVP | None]:
    """One forward and the gradient's backward: loss_fn's value at ``params``
    (detached), the gradient g (detached) and, with ``keep_graph``, a function
    u -> H u. The backward keeps its own graph (``create_graph``), so that H u is
    one more backward, of <g, u>, through it (reverse-over-reverse): u may be
    chosen after seeing g (e.g. this step's direction), with no second forward."""
    with torch.enable_grad():
        value = loss_fn(params)
        loss = value[0] if isinstance(value, tuple) else value
        grads = torch.autograd.grad(loss, params, create_graph=keep_graph, materialize_grads=True)

    def hvp(u: Sequence[Tensor]) -> list[Tensor]:
        with torch.enable_grad():
            gu = [
                torch.dot(g.reshape(-1), t.reshape(-1).to(g.dtype))
                for g, t in zip(grads, u, strict=True)
                if g.requires_grad
            ]
            if not gu:  # the gradient does not depend on the parameters: H = 0
                return [torch.zeros_like(p) for p in params]
            return list(torch.autograd.grad(sum(gu), params, materialize_grads=True))

    def detached(x):
        return x.detach() if isinstance(x, Tensor) else x

    value = tuple(map(detached, value)) if isinstance(value, tuple) else detached(value)
    return value, [g.detach() for g in grads], hvp if keep_graph else None


def grad_and_hvp(
    loss_fn: LossFn, params: Sequence[Tensor], tangents: Sequence[Tensor] | None
) -> tuple[Tensor | tuple[Tensor, ...], list[Tensor], list[Tensor] | None]:
    """loss_fn's value, its gradient g and H u for the ``tangents`` u (None: g alone),
    from one ``gradient_pass``. On 2 CPU cores (an 8 x 1024 FCN, batch 128), H u costs
    3.1x a plain forward and backward this way, about what forward-over-reverse costs
    with torch's dual tensors (3.2x): every matrix product of both passes gets its
    tangent's two more. Reverse-over-reverse is kept for the choice of u after g."""
    value, g, hvp = gradient_pass(loss_fn, params, keep_graph=tangents is not None)
    return value, g, None if hvp is None else hvp(tangents)


def _sum_of_dots(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """sum_i <a_i, b_i> in fp32 (or fp64), one read of each tensor (BLAS dot)."""

    def flat(t: Tensor) -> Tensor:
        t = t.reshape(-1)
        return t if t.dtype in (torch.float32, torch.float64) else t.float()

    return torch.stack([torch.dot(flat(x), flat(y)) for x, y in zip(a, b, strict=True)]).sum()


def _mean_over_ranks(x: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


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
        dd, gd = _sum_of_dots(d, d), _sum_of_dots(g, d)
        prev = self.c_avg if self.c_avg is not None else torch.zeros_like(c)
        self.c_avg = self.beta3 * prev + (1 - self.beta3) * c
        c_hat = self.c_avg / (1 - self.beta3**self.t)
        L = torch.maximum(c_hat, c)
        r = torch.where(L > 0, 2 * gd / (L.clamp_min(tiny) * dd.clamp_min(tiny)), 0.0)
        rate = self.lam * r
        torch._foreach_addcmul_(params, d, [rate.to(params[0].dtype)] * len(d), value=-1)
        self.curvature, self.L, self.rate = c, L, rate

    @torch.no_grad()
    def _curvature(self, hu: list[Tensor], u: list[Tensor]) -> Tensor:
        """c = <H u, u> / |u|^2, <H u, u> averaged over ranks."""
        uhu = _mean_over_ranks(_sum_of_dots(hu, u).float())
        return uhu / _sum_of_dots(u, u).float().clamp_min(torch.finfo(torch.float32).tiny)

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
        _, _, hd = grad_and_hvp(loss_fn, params, [x.detach() for x in d])
        self._rescaled_step(params, g, d, self._curvature(hd, d))
        return loss


class CurvatureStepOnePass(CurvatureStep):
    """The curvature step in the pass that takes the gradient (module docstring):
    ``step(loss_fn=...)`` replaces the backward (no ``loss.backward()`` before it;
    ``p.grad`` is neither read nor set) and returns ``loss_fn``'s value (e.g.
    (loss, output)) at the parameters before the step, detached.

    ``along="previous"``: c along the previous step's direction, known before the
    batch (the first step, with none yet, calls ``loss_fn`` once more for c along d).
    ``along="current"``: c along this step's direction d, computed from the gradient
    between the pass's two backwards: the exact step (``CurvatureStep``'s iterates)
    at the one-pass price, one forward instead of two."""

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
        first = any(u is None for u in prev)
        value, g, hvp = gradient_pass(loss_fn, params, keep_graph=True)
        with torch.no_grad():
            if dist.is_available() and dist.is_initialized():  # DDP's all-reduce of g
                flat = _mean_over_ranks(torch._utils._flatten_dense_tensors(g))
                g = list(torch._utils._unflatten_dense_tensors(flat, g))
            if self.along == "current":
                d = self._direction(g)
                c = self._curvature(hvp([x.detach() for x in d]), d)
            elif first:  # no previous direction yet: the exact step, a second pass
                hvp = None  # free the first pass's graph before the second
                d = self._direction(g)
                _, _, hd = grad_and_hvp(loss_fn, params, [x.detach() for x in d])
                c = self._curvature(hd, d)
            else:  # c from d_{t-1} before the direction update (a momentum buffer is it)
                c = self._curvature(hvp(prev), prev)
                d = self._direction(g)
            self._rescaled_step(params, g, d, c)
            if self.along == "previous":
                for p, u in zip(params, d, strict=True):
                    self.state[p]["direction"] = u
        return value
