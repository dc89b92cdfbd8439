"""Automatic Gradient Descent (Bernstein et al. 2023, arXiv:2304.05187), Algorithm 1.

Usage::

    orthogonal_init_(model)
    opt = AGD(model.parameters(), gain=1.0)
    loss.backward(); opt.step()      # float(opt.eta): the eta of that step

The update, for a network with L weight tensors W_1..W_L (every parameter with
ndim >= 2), each treated as one matrix or, for a convolution kernel of shape
(d_out, d_in, kx, ky), as kx*ky separate (d_out, d_in) sub-matrices:

    s_k = sqrt(d_out / d_in)                    (divided by sqrt(kx*ky) for a kernel)
    G   = (1/L) * sum_k s_k * sum_sub ||grad W_k,sub||_F
    eta = log((1 + sqrt(1 + 4G)) / 2)
    W_k,sub <- W_k,sub - gain * (eta/L) * s_k * grad / ||grad||_F

AGD keeps no per-parameter state. Under data parallelism the gradients have been
all-reduced by DDP before ``step()`` runs, so every rank computes the same G and
takes the identical step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor


def scale(weight: Tensor) -> float:
    """The paper's per-layer scale s_k = sqrt(d_out/d_in) (/ sqrt(kx*ky) for kernels)."""
    if weight.ndim < 2:
        raise ValueError(f"AGD's scale is defined for matrices, got shape {tuple(weight.shape)}")
    d_out, d_in = weight.shape[0], weight.shape[1]
    receptive_field = math.prod(weight.shape[2:])  # 1 for a matrix
    return math.sqrt(d_out / d_in) / math.sqrt(receptive_field)


def as_submatrices(t: Tensor) -> Tensor:
    """View a weight (or its gradient) as (d_out, d_in, n_sub): n_sub = 1 for a matrix."""
    return t.reshape(t.shape[0], t.shape[1], -1)


def submatrix_norms(grad: Tensor) -> Tensor:
    """Frobenius norm of each (d_out, d_in) sub-matrix, shape (n_sub,), accumulated in fp32."""
    return torch.linalg.vector_norm(as_submatrices(grad), dim=(0, 1), dtype=torch.float32)


class AGD(torch.optim.Optimizer):
    """Automatic Gradient Descent: no learning rate, no schedule.

    Args:
        params: the network's weight tensors (every one must have ndim >= 2; the
            paper's networks have no biases and no BatchNorm affine parameters).
        gain: multiplies every update; 1.0 is the paper's setting.

    After each ``step()``, ``opt.eta`` is the step's eta as a 0-dim tensor on the
    parameters' device (``float(opt.eta)`` reads it; no host sync inside ``step``).
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], gain: float = 1.0):
        if not gain > 0:
            raise ValueError(f"gain must be > 0, got {gain}")
        super().__init__(params, defaults={"gain": gain})
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim < 2:
                    raise ValueError(
                        f"AGD updates weight matrices and kernels only; got a parameter of "
                        f"shape {tuple(p.shape)} (build the model with bias: false)"
                    )
        self.depth = sum(len(g["params"]) for g in self.param_groups)  # L
        self.eta: Tensor = torch.zeros(())
        self.G: Tensor = torch.zeros(())

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        # (weight, gain) for every weight that received a gradient
        weights = [(p, g["gain"]) for g in self.param_groups for p in g["params"]]
        weights = [(p, gain) for p, gain in weights if p.grad is not None]
        if not weights:
            return loss
        L = self.depth
        norms = [submatrix_norms(p.grad) for p, _ in weights]

        # G = (1/L) sum_k s_k * (sum of W_k's sub-matrix gradient norms)
        G = torch.stack([scale(p) * n.sum() for (p, _), n in zip(weights, norms, strict=True)])
        G = G.sum() / L
        eta = torch.log((1 + torch.sqrt(1 + 4 * G)) / 2)
        self.G, self.eta = G, eta

        for (p, gain), n in zip(weights, norms, strict=True):
            # gain * eta/L * s_k / ||grad||_F per sub-matrix; a zero gradient moves nothing.
            factor = (gain * eta / L * scale(p)) / n.clamp_min(torch.finfo(n.dtype).tiny)
            update = as_submatrices(p.grad) * factor.to(p.grad.dtype)
            p.sub_(update.reshape(p.shape))
        return loss
