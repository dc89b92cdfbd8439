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

The step keeps no per-parameter state, reads the gradients twice (one foreach
pass for all norms, one fused multiply-add for the update), and never syncs with
the host: ``opt.eta`` and ``opt.G`` are 0-dim tensors on the parameters' device,
norms are accumulated in fp32 whatever the gradients' dtype. Under data
parallelism DDP has all-reduced the gradients before ``step()``, so every rank
computes the same G and takes the identical step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

EXTRA_SCALES = {"bias": "sqrt_n", "shift": "sqrt_n", "gain": "one"}


def scale(weight: Tensor) -> float:
    """The paper's per-layer scale s_k = sqrt(d_out/d_in) (/ sqrt(kx*ky) for kernels)."""
    if weight.ndim < 2:
        raise ValueError(f"AGD's scale is defined for matrices, got shape {tuple(weight.shape)}")
    d_out, d_in = weight.shape[0], weight.shape[1]
    receptive_field = math.prod(weight.shape[2:])  # 1 for a matrix
    return math.sqrt(d_out / d_in) / math.sqrt(receptive_field)


def extra_scale(role: str, p: Tensor) -> float:
    """s_e of a bias/shift (sqrt(n)) or a gain (1)."""
    return math.sqrt(p.numel()) if role in ("bias", "shift") else 1.0


def as_submatrices(t: Tensor) -> Tensor:
    """View a weight (or its gradient) as (d_out, d_in, n_sub): n_sub = 1 for a matrix."""
    return t.reshape(t.shape[0], t.shape[1], -1)


def submatrix_norms(grad: Tensor) -> Tensor:
    """Frobenius norm of each (d_out, d_in) sub-matrix, shape (n_sub,), accumulated in fp32."""
    return torch.linalg.vector_norm(as_submatrices(grad), dim=(0, 1), dtype=torch.float32)


def frobenius_norms(tensors: list[Tensor]) -> Tensor:
    """||t||_F of each tensor, stacked, fp32: one read of each. On a GPU (or for
    half-precision tensors) a single foreach kernel with fp32 accumulation; on a CPU,
    BLAS dot products, which read memory about twice as fast as torch's norm there."""
    if tensors[0].device.type == "cpu" and all(
        t.dtype in (torch.float32, torch.float64) and t.is_contiguous() for t in tensors
    ):
        flat = [t.view(-1) for t in tensors]
        return torch.stack([torch.dot(f, f) for f in flat]).float().sqrt()
    return torch.stack(torch._foreach_norm(tensors, 2, dtype=torch.float32))


class AGD(torch.optim.Optimizer):
    """Automatic Gradient Descent: no learning rate, no schedule.

    Args:
        params: the network's weight tensors (each of ndim >= 2), or param groups.
            A group built by ``AGD.from_model`` holds one weight layer: its weight
            first, then its extras, with their ``roles``.
        gain: multiplies every update; 1.0 is the paper's setting.

    After each ``step()``, ``opt.eta`` is the step's eta as a 0-dim tensor on the
    parameters' device (``float(opt.eta)`` reads it; no host sync inside ``step``).
    It is overwritten in place by the next step: ``opt.eta.clone()`` keeps one.
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
        self._plans: dict[tuple, _Plan] = {}

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

    def _plan(self) -> _Plan | None:
        """What this step touches (the parameters with a gradient), built once per
        pattern of present gradients and reused: no host work on the device."""
        present = tuple(p.grad is not None for g in self.param_groups for p in g["params"])
        plan = self._plans.get(present)
        if plan is None:
            plan = self._plans[present] = _Plan(self.param_groups)
        return plan if plan.weights or plan.extras else None

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        plan = self._plan()
        if plan is not None:
            self._update(plan)
        return loss

    def _update(self, plan: _Plan) -> None:
        """G, eta and the update of every parameter with a gradient (the paper's rule)."""
        G, factors = plan.G_and_factors()
        eta = self._set_eta(G)
        # p <- p - (gain * eta/L * s / norm) * grad, one fused multiply-add per tensor
        targets, grads, shapes = plan.targets()
        _addcmul(targets, grads, (factors * (eta / self.depth)).split(plan.sizes), shapes)

    def _set_eta(self, G_times_L: Tensor) -> Tensor:
        """G = (sum of the layers' terms) / L and eta = log((1 + sqrt(1 + 4G)) / 2),
        written into ``self.G`` and ``self.eta``; returns eta."""
        G = G_times_L / self.depth
        eta = torch.log((1 + torch.sqrt(1 + 4 * G)) / 2)
        self.G.copy_(G)
        self.eta.copy_(eta)
        return eta


def _addcmul(targets: list[Tensor], grads: list[Tensor], factors, shapes) -> None:
    """target <- target - factor * grad for each tensor, factors shaped to broadcast."""
    facs = [
        f.view(shape) if t.dtype == f.dtype else f.view(shape).to(t.dtype)
        for f, shape, t in zip(factors, shapes, targets, strict=True)
    ]
    # in reverse: the gradients read last by the norms are still in cache
    torch._foreach_addcmul_(targets[::-1], grads[::-1], facs[::-1], value=-1)


class _Plan:
    """The parameters with a gradient, their scales and gains as device tensors."""

    def __init__(self, param_groups: list[dict]):
        self.weights: list[Tensor] = []  # weight tensors with a gradient
        self.extras: list[list[tuple[str, Tensor]]] = []  # per layer: its extras with a grad
        w_scale, w_gain, e_scale, e_gain = [], [], [], []
        for group in param_groups:
            roles = group["roles"] or ["weight"] * len(group["params"])
            block = []
            for p, role in zip(group["params"], roles, strict=True):
                if p.grad is None:
                    continue
                if role == "weight":
                    self.weights.append(p)
                    n_sub = math.prod(p.shape[2:])
                    w_scale += [scale(p)] * n_sub
                    w_gain += [group["gain"]] * n_sub
                else:
                    block.append((role, p))
                    e_scale.append(extra_scale(role, p))
                    e_gain.append(group["gain"])
            if block:
                self.extras.append(block)
        params = self.weights + [p for block in self.extras for _, p in block]
        if not params:
            return
        device = params[0].device
        f32 = dict(device=device, dtype=torch.float32)
        self.w_scale, self.w_gain = torch.tensor(w_scale, **f32), torch.tensor(w_gain, **f32)
        self.e_scale, self.e_gain = torch.tensor(e_scale, **f32), torch.tensor(e_gain, **f32)
        # which layer block each extra belongs to, for the blocks' joint norms
        self.e_block = torch.tensor(
            [i for i, block in enumerate(self.extras) for _ in block], device=device
        )
        self.matrices = [i for i, p in enumerate(self.weights) if p.ndim == 2]
        self.kernels = [i for i, p in enumerate(self.weights) if p.ndim > 2]
        self.sizes = [math.prod(p.shape[2:]) for p in self.weights] + [1] * len(e_scale)
        self.params = params

    def G_and_factors(self) -> tuple[Tensor, Tensor]:
        """(L * G, gain * s / norm for every sub-matrix and extra), all on the device."""
        parts = [self.weight_terms()] if self.weights else []
        if self.extras:
            parts.append(self.extra_terms())
        return torch.stack([G for G, _ in parts]).sum(), torch.cat([f for _, f in parts])

    def weight_norms(self) -> Tensor:
        """||grad||_F of every weight sub-matrix, concatenated, fp32."""
        grads = [self.weights[i].grad for i in self.matrices]
        mats = frobenius_norms(grads) if grads else None
        if not self.kernels:
            return mats
        norms: list[Tensor | None] = [None] * len(self.weights)
        for j, i in enumerate(self.matrices):
            norms[i] = mats[j : j + 1]
        for i in self.kernels:  # a kernel needs a norm per sub-matrix
            norms[i] = submatrix_norms(self.weights[i].grad)
        return torch.cat(norms)

    def weight_terms(self) -> tuple[Tensor, Tensor]:
        """The weights' part of L * G, and their factors gain * s_k / ||grad||_F."""
        n = self.weight_norms()
        factors = self.w_gain * self.w_scale / n.clamp_min(torch.finfo(n.dtype).tiny)
        return (self.w_scale * n).sum(), factors

    def extra_terms(self) -> tuple[Tensor, Tensor]:
        """The extras' part of L * G, and their factors gain * s_e / N_k."""
        n = frobenius_norms([p.grad for block in self.extras for _, p in block])
        blocks = torch.zeros(len(self.extras), device=n.device)
        blocks = blocks.index_add_(0, self.e_block, n.square()).sqrt()
        N = blocks[self.e_block].clamp_min(torch.finfo(n.dtype).tiny)
        return (self.e_scale * n.square() / N).sum(), self.e_gain * self.e_scale / N

    def targets(self) -> tuple[list[Tensor], list[Tensor], list[tuple[int, ...]]]:
        """In-place targets, their gradients, and the shape each factor takes to
        broadcast: (kx, ky) over a kernel's sub-matrices (any memory layout), a
        0-dim scalar for a matrix or an extra."""
        targets, grads, shapes = [], [], []
        for p in self.weights:
            targets.append(p)
            grads.append(p.grad)
            shapes.append(tuple(p.shape[2:]))
        for block in self.extras:
            for _, p in block:
                targets.append(p)
                grads.append(p.grad)
                shapes.append(())
        return targets, grads, shapes
