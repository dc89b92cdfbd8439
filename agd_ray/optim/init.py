"""AGD's initialisation: every weight matrix (every kernel sub-matrix) is a uniformly
random semi-orthogonal matrix scaled by s_k, so all its singular values equal s_k.
Biases of Linear/Conv layers start at zero; normalisation gains and shifts keep
PyTorch's 1 and 0."""

from __future__ import annotations

import torch
from torch import nn

from agd_ray.optim.agd import scale


@torch.no_grad()
def orthogonal_init_(module: nn.Module) -> nn.Module:
    """Re-initialise every parameter with ndim >= 2 of ``module`` in place; returns it.

    ``torch.nn.init.orthogonal_`` draws from the Haar measure (QR of a Gaussian
    matrix with the sign correction), i.e. uniformly over semi-orthogonal matrices.
    """
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and m.bias is not None:
            m.bias.zero_()
    for p in module.parameters():
        if p.ndim < 2:
            continue
        s = scale(p)
        sub = p.view(p.shape[0], p.shape[1], -1)  # (d_out, d_in, kx*ky)
        for i in range(sub.shape[2]):
            w = torch.empty(p.shape[0], p.shape[1], dtype=torch.float32)
            nn.init.orthogonal_(w)
            sub[:, :, i].copy_(w.mul_(s))
    return module
