"""Optimizers: AGD (the paper's), its initialisation, and torch's baselines by name."""

from agd_ray.optim.agd import AGD, scale
from agd_ray.optim.baselines import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler
from agd_ray.optim.init import orthogonal_init_

__all__ = [
    "AGD",
    "OPTIMIZERS",
    "SCHEDULES",
    "build_optimizer",
    "build_scheduler",
    "orthogonal_init_",
    "scale",
]
