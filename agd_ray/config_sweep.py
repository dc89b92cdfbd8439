"""The ``sweep`` section of the config: what ``agd-ray sweep`` runs (the grid, the
seeds, the baselines' grids), and how (concurrency, failures, ASHA)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt

from agd_ray.config_sections import Section


class SweepConfig(Section):
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [0])
    baselines: list[dict[str, Any]] = Field(default_factory=list)
    max_concurrent_trials: PositiveInt | None = None
    max_failures: int = Field(default=0, ge=-1)
    """Tune restarts a failed trial this many times (-1: without end), from its last
    checkpoint; e.g. for spot nodes. (``scaling.max_failures`` is Train's, inside a
    multi-worker trial: a lost worker restarts the worker group.)"""
    report: bool = True
    """Run ``agd-ray report`` on the results when the sweep ends."""
    scheduler: Literal["fifo", "asha", "sha"] = "fifo"
    """fifo: every trial trains to the end. asha: Ray Tune's ASHA stops a baseline's
    grid points whose validation loss lags the others' at the same epoch, within each
    tuning group (architecture x seed) and optimizer; AGD's single runs (and any
    optimizer with one run per group) are never stopped. sha: successive halving
    that waits for the whole grid at each rung (a trial there pauses, its slot goes
    to other trials) and then keeps the best 1/reduction_factor: on small grids it
    stops what ASHA, which judges each arrival against the earlier ones only, lets
    run. Stopped trials are stored with status ``stopped`` and what they trained
    counts in the compute accounting."""
    grace_epochs: PositiveInt | None = None
    """asha, sha: epochs every trial trains before it can be stopped (default: a
    quarter of train.epochs, at least 1)."""
    reduction_factor: float = Field(default=3.0, gt=1.0)
    """asha, sha: 1/reduction_factor of the trials at each rung go on to the next."""

    def check_scheduler(self, data, train, scaling) -> None:
        """ASHA and SHA need a validation loss every epoch and grace epochs within the
        run; SHA pauses in-process (one-worker) trials only, and leaves concurrency to
        the cluster's resources."""
        if self.scheduler == "fifo":
            return
        if self.scheduler == "sha" and self.max_concurrent_trials is not None:
            raise ValueError(
                "sweep.max_concurrent_trials: sha runs as many trials as the cluster's "
                "CPUs/GPUs hold (Tune's limit would count trials paused at a rung); unset it"
            )
        if self.scheduler == "sha" and scaling.num_workers > 1:
            raise ValueError(
                "sweep.scheduler: sha pauses trials at its rungs, which one-worker trials "
                f"only can do (scaling.num_workers is {scaling.num_workers}); use asha"
            )
        if data.val_fraction == 0 and not data.is_text:
            raise ValueError(
                f"sweep.scheduler: {self.scheduler} stops runs on their validation loss, and "
                "data.val_fraction is 0 (no validation split)"
            )
        if (self.grace_epochs or 1) > train.epochs:
            raise ValueError(
                f"sweep.grace_epochs: {self.grace_epochs} is more than train.epochs={train.epochs}"
            )
