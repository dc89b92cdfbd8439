"""The curvature step's second-order passes: the gradient, and <H u, u> along a
direction u, by Taylor mode (``agd_ray.optim.taylor``) or reverse-over-reverse.

    value, g, hvp = gradient_pass(loss_fn, params, keep_graph=True); hu = hvp(u)
    uhu = uhu_forward(loss_fn, params, u, method="taylor")    # a forward of its own

On 2 CPU cores (an 8 x 1024 FCN, batch 128, ``benchmarks/curvature_step.py``):
<H u, u> in the gradient's own forward (Taylor mode, u known before the pass) costs
about 2.0-2.2x a plain forward and backward, a Taylor forward after it 2.5-2.8x, and
reverse-over-reverse (H u, then its dot with u) 3.3-3.5x.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from agd_ray.optim.taylor import Jet, LossFn, detached, taylor_pass
from agd_ray.optim.taylor_rules import wide

HVP = Callable[[Sequence[Tensor]], list[Tensor]]
"""u -> H u, by a backward through a kept gradient graph."""


def frozen_stats() -> Jet:
    """A context in which batch norms use batch statistics without updating their
    running ones: for a forward that repeats one the step has already taken."""
    return Jet([], update_stats=False)


def gradient_pass(
    loss_fn: LossFn, params: Sequence[Tensor], keep_graph: bool
) -> tuple[Tensor | tuple[Tensor, ...], list[Tensor], HVP | None]:
    """One forward and the gradient's backward: loss_fn's value at ``params``
    (detached), the gradient g (detached) and, with ``keep_graph``, a function
    u -> H u. The backward keeps its own graph (``create_graph``), so that H u is
    one more backward, of <g, u>, through it (reverse-over-reverse): u may be
    chosen after seeing g, with no second forward."""
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

    return detached(value), [g.detach() for g in grads], hvp if keep_graph else None


def grad_and_hvp(
    loss_fn: LossFn, params: Sequence[Tensor], tangents: Sequence[Tensor] | None
) -> tuple[Tensor | tuple[Tensor, ...], list[Tensor], list[Tensor] | None]:
    """loss_fn's value, its gradient g and H u for the ``tangents`` u (None: g alone),
    from one ``gradient_pass``."""
    value, g, hvp = gradient_pass(loss_fn, params, keep_graph=tangents is not None)
    return value, g, None if hvp is None else hvp(tangents)


def sum_of_dots(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """sum_i <a_i, b_i> in fp32 (or fp64), one read of each tensor (BLAS dot)."""

    def flat(t: Tensor) -> Tensor:
        return wide(t.reshape(-1))

    return torch.stack([torch.dot(flat(x), flat(y)) for x, y in zip(a, b, strict=True)]).sum()


def mean_over_ranks(x: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def uhu_forward(
    loss_fn: LossFn, params: Sequence[Tensor], u: Sequence[Tensor], method: str
) -> Tensor:
    """<H u, u> at ``params`` from a pass of its own that leaves batch norms' running
    statistics as they are: a Taylor forward (``method="taylor"``; raises
    ``TaylorUnsupported`` for a model with an operation it has no rule for), or a
    forward, the gradient's differentiable backward and the backward of <g, u>."""
    u = [x.detach() for x in u]
    if method == "taylor":
        return taylor_pass(loss_fn, params, u, grad=False, update_stats=False)[2]
    with frozen_stats():
        _, _, hu = grad_and_hvp(loss_fn, params, u)
    return sum_of_dots(hu, u)
