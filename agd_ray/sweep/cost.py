"""What an epoch of a trial costs before one is measured: its steps and its compute
(6 x parameters x samples, per token for a language model), so that the progress
line's ETA prices a trial of an architecture it has not seen yet by its size, not
at the mean of the small ones that ran first.

    work = epoch_work(specs, data_specs)   # trial id -> (steps, FLOPs) of an epoch
    seconds = size_model(points)(steps, flops)

Parameters are counted on a model built on torch's meta device (no memory, no
initialisation); the samples are ``data.num_samples``, shared by a sweep's trials,
so both numbers only need to be right relative to each other."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from agd_ray.trial import TrialSpec


def epoch_work(specs: list[TrialSpec], data_specs: dict) -> dict[str, tuple[float, float]]:
    """(steps, FLOPs) of one epoch of each trial whose data spec is known
    (``data_specs``: trial id -> DataSpec); a model that cannot be built is left out."""
    import torch

    from agd_ray.models import build_model, count_params

    params: dict[tuple, int | None] = {}
    work = {}
    for spec in specs:
        data = data_specs.get(spec.trial_id)
        if data is None:
            continue
        cfg = spec.config
        key = (cfg.model.model_dump_json(), data)
        if key not in params:
            try:
                with torch.device("meta"):
                    params[key] = count_params(build_model(cfg.model, data))
            except Exception:  # the trial itself will say what is wrong
                params[key] = None
        if params[key] is None:
            continue
        samples = float(cfg.data.num_samples or 1)
        steps = samples / cfg.train.batch_size
        work[spec.trial_id] = (steps, 6.0 * params[key] * samples * (data.context or 1))
    return work


def size_model(points: list[tuple[float, float, float]]) -> Callable[[float, float], float]:
    """Seconds per epoch as a function of (steps, FLOPs), from measured (steps, FLOPs,
    seconds): a per-step cost plus a per-FLOP one, both >= 0 (least squares), from
    two or more sizes; from one, its seconds scaled by FLOPs."""
    from scipy.optimize import nnls

    steps, flops, seconds = (np.array(c, float) for c in zip(*points, strict=True))
    if len(points) >= 2:
        scale = np.array([steps.max(), flops.max()])
        (a, b), _ = nnls(np.column_stack([steps, flops]) / scale, seconds)
        if a > 0 or b > 0:
            return lambda s, f: a * s / scale[0] + b * f / scale[1]
    rate = float(np.mean(seconds / flops))
    return lambda s, f: rate * f
