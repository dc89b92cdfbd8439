"""Optimizers: AGD (the paper's), its initialisation, and torch's baselines by name."""

from agd_ray.optim.agd import AGD, scale
from agd_ray.optim.baselines import OPTIMIZERS, build_optimizer
from agd_ray.optim.init import orthogonal_init_

__all__ = ["AGD", "OPTIMIZERS", "build_optimizer", "orthogonal_init_", "scale"]
