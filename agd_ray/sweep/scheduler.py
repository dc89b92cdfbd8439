"""ASHA for the baselines' grids (``sweep.scheduler: asha``), one per tuning group.

    Tuner(..., tune_config=TuneConfig(scheduler=grouped_asha(cfg, specs)))

Ray Tune's ``ASHAScheduler`` (asynchronous successive halving; Li et al. 2020) stops
a trial at a rung (grace_epochs, x reduction_factor, ...) when its validation loss is
worse than the best 1/reduction_factor of the losses already recorded there. One
global ASHA would compare a deep network's loss with a shallow one's; here every
(tuning group, optimizer) grid has its own, so a learning rate is stopped only by
its own architecture and seed's other learning rates. AGD's single runs, and any
optimizer with one run per group, are never stopped: nothing in their grid to
compare them with.
"""

from __future__ import annotations

from collections import Counter

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from agd_ray.config import ExperimentConfig
from agd_ray.trial import TrialSpec

METRIC = "val_loss"


class GroupedASHA(FIFOScheduler):
    """FIFO for the trials it leaves alone, an ASHA per baseline grid for the rest."""

    def __init__(self, specs: list[TrialSpec], epochs: int, grace: int, reduction: float):
        super().__init__()
        size = Counter((s.group, s.optimizer) for s in specs)
        self.grid_of = {  # trial id -> its grid, for trials that ASHA may stop
            s.trial_id: (s.group, s.optimizer)
            for s in specs
            if s.optimizer != "agd" and size[(s.group, s.optimizer)] > 1
        }
        self.epochs, self.grace, self.reduction = epochs, grace, reduction
        self.grids: dict[tuple[str, str], ASHAScheduler] = {}
        self.stopped = 0

    def _asha(self, trial) -> ASHAScheduler | None:
        grid = self.grid_of.get(trial.config.get("trial_id"))
        if grid is None:
            return None
        if grid not in self.grids:
            self.grids[grid] = ASHAScheduler(
                time_attr="training_iteration",  # one report per epoch
                metric=METRIC,
                mode="min",
                max_t=self.epochs,
                grace_period=self.grace,
                reduction_factor=self.reduction,
                stop_last_trials=False,  # a run at its last epoch finishes by itself
            )
        return self.grids[grid]

    def on_trial_add(self, tune_controller, trial) -> None:
        if (asha := self._asha(trial)) is not None:
            asha.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        asha = self._asha(trial)
        if asha is None or result.get(METRIC) is None:
            return TrialScheduler.CONTINUE
        decision = asha.on_trial_result(tune_controller, trial, result)
        self.stopped += decision == TrialScheduler.STOP
        return decision

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        asha = self._asha(trial)
        if asha is not None and trial.trial_id in asha._trial_info and result.get(METRIC):
            asha.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        asha = self._asha(trial)
        if asha is not None and trial.trial_id in asha._trial_info:
            asha.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"ASHA per tuning group: {len(self.grids)} grids, {self.stopped} trials stopped"


def grace_epochs(cfg: ExperimentConfig) -> int:
    """``sweep.grace_epochs``, or a quarter of the run (at least 1)."""
    return cfg.sweep.grace_epochs or max(1, cfg.train.epochs // 4)


def make_scheduler(cfg: ExperimentConfig, specs: list[TrialSpec]) -> TrialScheduler | None:
    """The sweep's Tune scheduler: None (FIFO, every trial to the end) or GroupedASHA."""
    if cfg.sweep.scheduler != "asha":
        return None
    epochs = max(s.config.train.epochs for s in specs)
    return GroupedASHA(specs, epochs, grace_epochs(cfg), cfg.sweep.reduction_factor)
