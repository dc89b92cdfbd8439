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

Biases and gains (``from_model``) are updated exactly as in AGD: only AGD's hook
``directions`` is replaced.
"""

from __future__ import annotations

import torch
from torch import Tensor

from agd_ray.optim.agd import AGD, as_submatrices


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

    def directions(self, grads: list[Tensor]) -> tuple[Tensor, list[Tensor], Tensor]:
        """AGD's hook: t = <grad, O> and D = O (d = 1) for every sub-matrix."""
        terms, directions = [], []
        for grad in grads:
            g = as_submatrices(grad).permute(2, 0, 1)  # (n_sub, d_out, d_in)
            o = orthogonalise(g, self.ns_steps)
            terms.append((g.float() * o).sum(dim=(1, 2)))
            directions.append(o.permute(1, 2, 0).reshape(grad.shape).to(grad.dtype))
        t = torch.cat(terms)
        return t, directions, torch.ones_like(t)
