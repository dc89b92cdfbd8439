"""Optimizers: AGD (the paper's), its initialisation, and every optimizer by name
(``OPTIMIZERS``, the registry)."""

from agd_ray.optim.agd import AGD, scale
from agd_ray.optim.curvature import CurvatureStep
from agd_ray.optim.init import orthogonal_init_
from agd_ray.optim.registry import OPTIMIZERS, Entry, build_optimizer
from agd_ray.optim.roles import parameter_roles, weight_layers
from agd_ray.optim.schedules import build_scheduler
from agd_ray.optim.spectral import AGDSpectral

__all__ = [
    "AGD",
    "AGDSpectral",
    "CurvatureStep",
    "Entry",
    "OPTIMIZERS",
    "build_optimizer",
    "build_scheduler",
    "orthogonal_init_",
    "parameter_roles",
    "scale",
    "weight_layers",
]
