"""Automatic Gradient Descent (Bernstein et al. 2023, arXiv:2304.05187), Algorithm 1.

Usage::

    orthogonal_init_(model)
    opt = AGD(model.parameters(), gain=1.0)   # weights only, as in the paper
    opt = AGD.from_model(model)               # also biases and BatchNorm gains/shifts
    loss.backward(); opt.step()               # float(opt.eta): the eta of that step

The update, for a network with L weight tensors W_1..W_L (every Linear/Conv
weight), each treated as one matrix or, for a convolution kernel of shape
(d_out, d_in, kx, ky), as kx*ky separate (d_out, d_in) sub-matrices:

    s_k = sqrt(d_out / d_in)                    (divided by sqrt(kx*ky) for a kernel)
    G   = (1/L) * sum_k s_k * sum_sub ||grad W_k,sub||_F
    eta = log((1 + sqrt(1 + 4G)) / 2)
    W_k,sub <- W_k,sub - gain * (eta/L) * s_k * grad / ||grad||_F

Biases and normalisation gains/shifts (``AGD.from_model``; roles from
``agd_ray.optim.roles``) add no depth: each belongs to one weight layer k, and a
layer's extras are one more block of that layer, normalised together and moved
within the layer's share eta/L:

    N_k = sqrt(sum_e ||grad e||^2)              (e: layer k's bias, gains, shifts)
    e  <- e - gain * (eta/L) * s_e * grad e / N_k
    G  += (1/L) * sum_e s_e * ||grad e||^2 / N_k    (the block's first-order term)

with s_e = sqrt(n) for a bias or shift of n features (an (n x 1) matrix acting on
the constant input 1, so the layer's output moves by eta/L in RMS, as for W_k) and
s_e = 1 for a gain (a diagonal n x n matrix). Without extras this is the paper's
rule exactly.

Transformers (``model.arch: gpt``; the derivation: docs/agd_transformers.md). The
rule is unchanged; what the architecture decides is which tensors are W_k and
their shapes, all read from the fx trace like the image models':

- the token embedding is a (width x vocab) W_k acting on the one-hot token scaled
  to RMS 1 (sqrt(vocab) e_i): s = sqrt(width/vocab);
- W_Q, W_K, W_V, W_O are four (width x width) matrices, s = 1, each treated whole
  (heads are row blocks of W_Q, W_K, W_V reading the same input, and column blocks
  of W_O reading the concatenated heads: one matrix on one input, unlike a kernel's
  sub-matrices, which read shifted inputs);
- the MLP's W_1 (4 width x width, s = 2) and W_2 (width x 4 width, s = 1/2);
- the unembedding (vocab x width): s = sqrt(vocab/width);
- L = 2 + 6 * blocks: every matrix counts, the residual stream adds no depth (as
  for the paper's ResNets); LayerNorm gains (shifts) are extras of the layer that
  reads the norm (W_V, W_1, the unembedding) with s_e = 1 (sqrt(n)).

``agd_update`` below is this rule, plainly; ``AGD.step`` is its fast path (tested
equal): no per-parameter state, two reads of the gradients (one foreach pass for the
norms, one fused multiply-add), no host sync (``opt.eta``, ``opt.G``: 0-dim tensors
on the parameters' device), norms in fp32 whatever the dtype. Under DDP the gradients
are all-reduced before ``step()``, so every rank takes the identical step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from agd_ray.optim.agd_plan import (
    EXTRA_SCALES,
    StepPlan,
    as_submatrices,
    extra_scale,
    scale,
    submatrix_norms,
    weight_norms,
)

__all__ = ["AGD", "agd_update", "as_submatrices", "scale"]


def agd_update(
    grads: Sequence[Tensor],
    depth: int,
    gain: float = 1.0,
    extras: Sequence[Sequence[tuple[str, Tensor]]] = (),
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """The rule above, plainly: G, eta and every update, each W <- W - update.

    grads: the gradient of each weight W_k that has one; depth: L, every weight
    layer; extras: for each layer with extras, its extras' (role, gradient).
    Returns the updates of the weights, then of the extras, in order.
    """
    L = depth

    def over(a: Tensor, n: Tensor) -> Tensor:  # a / n, and 0 where n = 0 (no NaN)
        return torch.where(n > 0, a / n, 0.0)

    s = [scale(g) for g in grads]  # s_k
    n = [submatrix_norms(g) for g in grads]  # ||grad W_k,sub||_F, one per sub-matrix
    s_e = [[extra_scale(role, g) for role, g in block] for block in extras]  # s_e
    n_e = [[g.float().norm() for _, g in block] for block in extras]  # ||grad e||
    N = [torch.stack(n_b).norm() for n_b in n_e]  # N_k = sqrt(sum_e ||grad e||^2)

    weights_term = sum(s_k * n_k.sum() for s_k, n_k in zip(s, n, strict=True))
    extras_term = sum(
        s_j * over(n_j**2, N_k)  # s_e * ||grad e||^2 / N_k
        for s_b, n_b, N_k in zip(s_e, n_e, N, strict=True)
        for s_j, n_j in zip(s_b, n_b, strict=True)
    )
    G = torch.as_tensor((weights_term + extras_term) / L)
    eta = torch.log((1 + torch.sqrt(1 + 4 * G)) / 2)

    updates = [  # gain * (eta/L) * s_k * grad / ||grad||_F, sub-matrix by sub-matrix
        (over(gain * (eta / L) * s_k, n_k) * as_submatrices(g)).reshape(g.shape)
        for g, s_k, n_k in zip(grads, s, n, strict=True)
    ]
    updates += [  # gain * (eta/L) * s_e * grad e / N_k
        over(gain * (eta / L) * s_j, N_k) * g
        for block, s_b, N_k in zip(extras, s_e, N, strict=True)
        for (_, g), s_j in zip(block, s_b, strict=True)
    ]
    return G, eta, updates


class AGD(torch.optim.Optimizer):
    """Automatic Gradient Descent: no learning rate, no schedule.

    Args:
        params: the network's weight tensors (each of ndim >= 2), or param groups.
            A group built by ``AGD.from_model`` holds one weight layer: its weight
            first, then its extras, with their ``roles``.
        gain: multiplies every update; 1.0 is the paper's setting.

    After each ``step()``, ``opt.eta`` (and ``opt.G``) is the step's eta as a 0-dim
    tensor on the parameters' device (``float(opt.eta)`` reads it; no host sync
    inside ``step``). It is overwritten in place by the next step: ``opt.eta.clone()``
    keeps one. A variant of AGD overrides ``directions`` (see ``AGDSpectral``).
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], gain: float = 1.0):
        if not gain > 0:
            raise ValueError(f"gain must be > 0, got {gain}")
        super().__init__(params, defaults={"gain": gain, "roles": None})
        for group in self.param_groups:
            roles = group["roles"] or ["weight"] * len(group["params"])
            if group["roles"] and (len(roles) != len(group["params"]) or "weight" in roles[1:]):
                raise ValueError("an AGD layer group is its weight, then its extras (roles)")
            for p, role in zip(group["params"], roles, strict=True):
                if role == "weight" and p.ndim < 2:
                    raise ValueError(
                        f"AGD updates weight matrices and kernels only; got a parameter of "
                        f"shape {tuple(p.shape)} (build the model with bias: false, or use "
                        f"AGD.from_model(model) for biases and BatchNorm affine parameters)"
                    )
                if role not in ("weight", *EXTRA_SCALES):
                    raise ValueError(f"unknown parameter role {role!r}")
        # L: weight layers only; extras add no depth
        self.depth = sum(
            (g["roles"] or ["weight"] * len(g["params"])).count("weight") for g in self.param_groups
        )
        # written in place by step() (so that a torch.compile'd step updates them too)
        device = next((p.device for g in self.param_groups for p in g["params"]), None)
        self.eta: Tensor = torch.zeros((), device=device)
        self.G: Tensor = torch.zeros((), device=device)
        self._plans: dict[tuple, StepPlan] = {}

    @classmethod
    def from_model(cls, model: nn.Module, gain: float = 1.0) -> AGD:
        """AGD over every trainable parameter of ``model``, each with its role (weight,
        bias, gain, shift) and layer read from the module structure."""
        from agd_ray.optim.roles import weight_layers

        groups = [
            {
                "params": [layer.weight, *(p for _, p in layer.extras)],
                "roles": ["weight", *(r for r, _ in layer.extras)],
            }
            for layer in weight_layers(model)
        ]
        return cls(groups, gain=gain)

    def directions(self, grads: list[Tensor]) -> tuple[Tensor, list[Tensor], Tensor]:
        """The weights' part of the rule, which a variant of AGD overrides.

        Returns (t, D, d): for every weight sub-matrix (concatenated in order) its
        first-order term t and its direction D_sub / d_sub, D shaped like the grads:

            G += (1/L) * s_k * t        W_sub <- W_sub - gain * (eta/L) * s_k * D_sub / d_sub

        AGD's: t = d = ||grad||_F and D = grad itself (d is folded into the fused update).
        """
        norms = weight_norms(grads)
        return norms, grads, norms.clamp_min(torch.finfo(norms.dtype).tiny)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # what this step touches (the parameters with a gradient), planned once per
        # pattern of present gradients and reused: no host work on the device
        present = tuple(p.grad is not None for g in self.param_groups for p in g["params"])
        plan = self._plans.get(present)
        if plan is None:
            plan = self._plans[present] = StepPlan(self.param_groups, self.depth)
        if plan.params:
            self._update(plan)
        return loss

    def _update(self, plan: StepPlan) -> None:
        """``agd_update``, fast: the norms (one read of each gradient), L * G, eta, then
        p <- p - factor * D for every tensor in one fused multiply-add each, with
        factor = gain * (eta/L) * s / d (0-dim, or one per kernel sub-matrix)."""
        LG, coefs, directions = [], [], []
        if plan.weights:
            t, directions, d = self.directions([p.grad for p in plan.weights])
            LG.append(torch.dot(plan.w_scale, t))
            coefs.append(plan.w_coef / d)  # gain * s / (L * d)
        if plan.extras:
            extras_LG, extras_coef = plan.extra_terms()
            LG.append(extras_LG)
            coefs.append(extras_coef)
        LG = LG[0] if len(LG) == 1 else LG[0] + LG[1]
        coefs = coefs[0] if len(coefs) == 1 else torch.cat(coefs)
        grads = directions + [p.grad for p in plan.extra_params]
        # in reverse: the gradients the norms read last are still in cache (measured:
        # up to 0.07x an SGD step less than in order, on 8 x 1024^2 on 2 CPU cores)
        params, grads = plan.params[::-1], grads[::-1]
        G = LG / self.depth
        eta = torch.log((1 + torch.sqrt(1 + 4 * G)) / 2)
        self.G.copy_(G)
        self.eta.copy_(eta)
        factors = plan.per_tensor(coefs * eta)
        torch._foreach_addcmul_(params, grads, factors[::-1], value=-1)
