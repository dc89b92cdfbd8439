"""Expand a sweep config into trials: the Cartesian product of ``sweep.grid`` and
``sweep.seeds``, run once with the experiment's own optimizer (AGD, untuned) and
once per point of each baseline's hyperparameter grid (``sweep.baselines``).

Every trial belongs to a tuning group (its architecture point + seed), so the best
of a baseline's grid can be set against AGD's single run in the same group.
"""

from __future__ import annotations

import difflib
import itertools
import json
from typing import Any

from agd_ray.config import (
    ConfigError,
    ExperimentConfig,
    OptimizerConfig,
    config_keys,
    get_dotted,
    set_dotted,
    validate_config,
)
from agd_ray.trial import ARCH_COLUMNS, TrialSpec

# Optimizer fields whose value is itself a list (a list of lists is their grid).
_SEQUENCE_FIELDS = {"betas"}


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def baseline_points(index: int, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """One optimizer config per point of a baseline's grid (list-valued fields)."""
    where = f"sweep.baselines[{index}]"
    if not isinstance(entry, dict) or "name" not in entry:
        raise ConfigError(where, "each baseline needs a name (e.g. {name: adam, lr: [1e-3]})")
    grid = {}
    for key, value in entry.items():
        if key not in OptimizerConfig.model_fields:
            near = difflib.get_close_matches(key, OptimizerConfig.model_fields, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"{where}.{key}", f"unknown optimizer key{hint}")
        is_grid = isinstance(value, list) and (
            key not in _SEQUENCE_FIELDS or all(isinstance(v, list) for v in value)
        )
        if is_grid and not value:
            raise ConfigError(f"{where}.{key}", "empty list")
        grid[key] = value if is_grid else [value]
    return grid_points(grid)


def check_grid_keys(grid: dict[str, list[Any]], baselines: list[Any] = ()) -> None:
    valid = [k for k in config_keys() if "." in k and not k.startswith("sweep.")]
    if "optimizer.name" in grid and baselines:  # the grid would rename every baseline
        raise ConfigError(
            "sweep.grid.optimizer.name",
            "conflicts with sweep.baselines; list the other optimizers under sweep.baselines",
        )
    for key, values in grid.items():
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"sweep.grid.{key}", f"not a config key{hint}")
        if not values:
            raise ConfigError(f"sweep.grid.{key}", "empty list")


def expand(cfg: ExperimentConfig) -> list[TrialSpec]:
    """All trials of the sweep, each with its validated config, in a deterministic
    order (stable ids). The one place a trial's config is validated."""
    grid = cfg.sweep.grid
    check_grid_keys(grid, cfg.sweep.baselines)
    if not cfg.sweep.seeds:
        raise ConfigError("sweep.seeds", "empty list")
    base = cfg.model_dump(mode="json", exclude={"sweep"})
    optimizers = [("", base["optimizer"])]
    for i, entry in enumerate(cfg.sweep.baselines):
        optimizers += [(f"sweep.baselines[{i}]", p) for p in baseline_points(i, entry)]
    varied = sorted({f"optimizer.{k}" for _, o in optimizers[1:] for k in o if k != "name"})

    specs = []
    for seed, point in itertools.product(cfg.sweep.seeds, grid_points(grid)):
        items = [f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in point.items()]
        group = ";".join([*items, f"seed={seed}"])
        for where, opt in optimizers:
            raw = {**base, "optimizer": dict(opt)}
            raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
            for key, value in point.items():
                set_dotted(raw, key, value)
            set_dotted(raw, "train.seed", seed)
            trial_cfg = _validate(raw, point, where)
            columns = {k: get_dotted(trial_cfg, k) for k in (*ARCH_COLUMNS, *grid, *varied)}
            # each trial shows the hyperparameters its own entry sets (AGD: none)
            own = set(opt) if where else set()
            columns.update({k: None for k in varied if k not in grid and k[10:] not in own})
            trial_id = f"{cfg.name}-{len(specs):03d}-{trial_cfg.optimizer.name}"
            specs.append(TrialSpec(trial_id, trial_cfg, group, columns))
    return specs


def _validate(raw: dict[str, Any], point: dict[str, Any], where: str) -> ExperimentConfig:
    try:
        return validate_config(raw)
    except ConfigError as err:
        if err.key in point:
            raise ConfigError(f"sweep.grid.{err.key}", err.problem) from None
        if where and err.key.startswith("optimizer."):
            raise ConfigError(
                f"{where}.{err.key.removeprefix('optimizer.')}", err.problem
            ) from None
        # a key that is not swept, made invalid by the grid point: say which point
        at = ", ".join(f"{k}={json.dumps(v)}" for k, v in point.items())
        problem = f"{err.problem} (at grid point {at})" if at else err.problem
        raise ConfigError(err.key, problem) from None
