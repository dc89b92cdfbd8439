"""Optimizers: AGD (the paper's), its initialisation, and torch's baselines by name."""

from agd_ray.optim.agd import AGD, scale
from agd_ray.optim.baselines import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler
from agd_ray.optim.curvature import CurvatureStep
from agd_ray.optim.init import orthogonal_init_
from agd_ray.optim.roles import parameter_roles, weight_layers
from agd_ray.optim.spectral import AGDSpectral

__all__ = [
    "AGD",
    "AGDSpectral",
    "CurvatureStep",
    "OPTIMIZERS",
    "SCHEDULES",
    "build_optimizer",
    "build_scheduler",
    "orthogonal_init_",
    "parameter_roles",
    "scale",
    "weight_layers",
]
