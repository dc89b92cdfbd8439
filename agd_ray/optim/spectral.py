"""Spectral AGD (ablation): AGD's automatic eta, each weight update orthogonalised.

    opt = AGDSpectral.from_model(model, ns_steps=10)

Instead of ``grad / ||grad||_F``, each weight (each kernel sub-matrix) moves along
O = orth(grad), an approximation of the polar factor U V^T of grad = U S V^T found
by the Newton-Schulz iteration (no SVD):

    X_0 = grad / ||grad||_F,   X_{t+1} = 1.5 X_t - 0.5 X_t X_t^T X_t

Every singular value of X_0 is in (0, 1]; each step maps sigma to
1.5 sigma - 0.5 sigma^3, which drives it towards 1 (small ones grow by 1.5x per step,
so after ``ns_steps`` = 10 steps those above about ||grad||_F / 57 are close to 1
and smaller, noisier directions stay damped). The update's spectral norm is
therefore gain * eta/L * s_k, which AGD's perturbation bound assumes, and its
first-order term is <grad, O> (~ the nuclear norm of grad), which replaces
||grad||_F in G:

    G = (1/L) * sum_k s_k * sum_sub <grad W_k,sub, O_k,sub>    (+ extras, as in AGD)
    W_k,sub <- W_k,sub - gain * (eta/L) * s_k * O_k,sub

Biases and gains (``from_model``) are updated exactly as in AGD.
"""

from __future__ import annotations

import torch
from torch import Tensor

from agd_ray.optim.agd import AGD, _addcmul, _Plan


def orthogonalise(g: Tensor, steps: int = 10) -> Tensor:
    """Newton-Schulz approximation of the polar factor of each matrix in ``g``
    (..., d_out, d_in), computed in fp32."""
    x = g.float()
    norm = torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True)
    x = x / norm.clamp_min(torch.finfo(x.dtype).tiny)
    wide = x.shape[-2] <= x.shape[-1]  # iterate on the smaller Gram matrix
    for _ in range(steps):
        if wide:
            x = 1.5 * x - 0.5 * (x @ x.mT) @ x
        else:
            x = 1.5 * x - 0.5 * x @ (x.mT @ x)
    return x


class AGDSpectral(AGD):
    """AGD whose weight updates are orthogonalised by Newton-Schulz (see module doc)."""

    def __init__(self, params, gain: float = 1.0, ns_steps: int = 10):
        if ns_steps < 1:
            raise ValueError(f"ns_steps must be >= 1, got {ns_steps}")
        super().__init__(params, gain=gain)
        self.ns_steps = ns_steps

    @classmethod
    def from_model(cls, model, gain: float = 1.0, ns_steps: int = 10) -> AGDSpectral:
        opt = super().from_model(model, gain=gain)
        opt.ns_steps = ns_steps
        return opt

    def _update(self, plan: _Plan) -> None:
        """As AGD's, with orthogonalised weight updates and <grad, O> in G."""
        L = self.depth
        G = torch.zeros((), device=plan.params[0].device)
        directions = []
        if plan.weights:
            terms = []
            for p in plan.weights:
                g = p.grad.reshape(p.shape[0], p.shape[1], -1).permute(2, 0, 1)  # (n_sub, o, i)
                o = orthogonalise(g, self.ns_steps)
                directions.append(o)
                terms.append((g.float() * o).sum(dim=(1, 2)))
            G = G + (plan.w_scale * torch.cat(terms)).sum()
        if plan.extras:
            G_e, extra_factors = plan.extra_terms()
            G = G + G_e
        eta = self._set_eta(G)
        if plan.weights:
            sizes = plan.sizes[: len(plan.weights)]
            factors = (plan.w_gain * plan.w_scale * (eta / L)).split(sizes)
            for p, o, f in zip(plan.weights, directions, factors, strict=True):
                update = (o * f.view(-1, 1, 1)).permute(1, 2, 0).reshape(p.shape)
                p.sub_(update.to(p.dtype))
        if plan.extras:
            targets, grads, shapes = plan.targets()
            n_w = len(plan.weights)
            factors = (extra_factors * (eta / L)).split(1)
            _addcmul(targets[n_w:], grads[n_w:], factors, shapes[n_w:])
