"""Early stopping for the baselines' grids, one scheduler per tuning group:
ASHA (``sweep.scheduler: asha``) or synchronous successive halving (``sha``).

    Tuner(..., tune_config=TuneConfig(scheduler=make_scheduler(cfg, specs)))

Ray Tune's ``ASHAScheduler`` (asynchronous successive halving; Li et al. 2020) stops
a trial at a rung (grace_epochs, x reduction_factor, ...) when its validation loss is
worse than the best 1/reduction_factor of the losses already recorded there. One
global ASHA would compare a deep network's loss with a shallow one's; here every
(tuning group, optimizer) grid has its own, so a learning rate is stopped only by
its own architecture and seed's other learning rates. AGD's single runs, and any
optimizer with one run per group, are never stopped: nothing in their grid to
compare them with.

ASHA judges each arrival at a rung against the arrivals before it: the first always
goes on, so a grid of two or three learning rates is barely pruned. ``GroupedSHA``
waits at each rung for the grid's other live trials (a trial there is paused: it
checkpoints and gives its slot to other trials), then keeps the best
ceil(n / reduction_factor) and stops the rest (Jamieson & Talwalkar 2016).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from agd_ray.config import ExperimentConfig
from agd_ray.sweep.store import OutcomeStore
from agd_ray.trial import TrialSpec

METRIC = "val_loss"
CONTINUE, PAUSE, STOP = TrialScheduler.CONTINUE, TrialScheduler.PAUSE, TrialScheduler.STOP


def grids(specs: list[TrialSpec]) -> dict[str, tuple[str, str]]:
    """Trial id -> its grid (tuning group, optimizer), for the trials a scheduler may
    stop: not AGD's, and only in grids of more than one run."""
    size = Counter((s.group, s.optimizer) for s in specs)
    return {
        s.trial_id: (s.group, s.optimizer)
        for s in specs
        if s.optimizer != "agd" and size[(s.group, s.optimizer)] > 1
    }


def rungs(grace: int, reduction: float, epochs: int) -> list[int]:
    """The epochs at which trials are judged: grace, grace x reduction, ... < epochs."""
    out, k = [], 0
    while (rung := round(grace * reduction**k)) < epochs:
        if not out or rung > out[-1]:
            out.append(rung)
        k += 1
    return out


class GroupedASHA(FIFOScheduler):
    """FIFO for the trials it leaves alone, an ASHA per baseline grid for the rest."""

    def __init__(
        self, specs: list[TrialSpec], epochs: int, grace: int, reduction: float, outcomes: str
    ):
        super().__init__()
        self.grid_of = grids(specs)
        self.epochs, self.grace, self.reduction = epochs, grace, reduction
        self.outcomes = outcomes  # the OutcomeStore's URI: decisions are marked there
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
            return CONTINUE
        decision = asha.on_trial_result(tune_controller, trial, result)
        if decision == STOP:
            self.stopped += 1
            OutcomeStore(self.outcomes).mark_stopped(trial.config["trial_id"])
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


class GroupedSHA(FIFOScheduler):
    """Synchronous successive halving per baseline grid; FIFO for every other trial.

    At each rung (``rungs``) a grid's trial is paused until every live trial of its
    grid has reached the rung; the last to arrive decides for all: the best
    ceil(n / reduction) by validation loss go on (the paused ones are resumed from
    the checkpoint they reported there), the others stop. A trial that ends or
    fails before a rung leaves its grid, which may complete that rung's decision.
    ``specs`` are the trials this run will run (not those finished before a
    ``--resume``): each grid waits for its members among them."""

    def __init__(
        self, specs: list[TrialSpec], epochs: int, grace: int, reduction: float, outcomes: str
    ):
        super().__init__()
        self.grid_of = grids(specs)
        self.rungs, self.reduction = rungs(grace, reduction, epochs), reduction
        self.outcomes = outcomes  # the OutcomeStore's URI: decisions are marked there
        self.live: dict[tuple, set[str]] = defaultdict(set)  # grid -> its live trial ids
        for trial_id, grid in self.grid_of.items():  # every one, created by Tune or not yet
            self.live[grid].add(trial_id)
        self.seen: dict[tuple, dict[Trial, float]] = defaultdict(dict)  # (grid, rung) ->
        self.decided: set[tuple] = set()  # (grid, rung) pairs judged
        self.resume: set[Trial] = set()  # paused trials that go on
        self.stopped = 0

    def _grid(self, trial) -> tuple | None:
        return self.grid_of.get(trial.config.get("trial_id"))

    def on_trial_add(self, tune_controller, trial) -> None:
        """A restored experiment adds the trials that ended before it was interrupted
        as they are: they will not reach another rung."""
        if trial.status in (Trial.TERMINATED, Trial.ERROR):
            self._leave(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        grid = self._grid(trial)
        if grid is None or "epoch" not in result:
            return CONTINUE
        self.resume.discard(trial)
        epochs = result["epoch"] + 1
        rung = next(
            (r for r in self.rungs if r <= epochs and trial not in self.seen[grid, r]), None
        )
        if rung is None or (grid, rung) in self.decided:
            return CONTINUE
        loss = result.get(METRIC)
        finite = isinstance(loss, int | float) and math.isfinite(loss)
        self.seen[grid, rung][trial] = loss if finite else math.inf
        if len(self.seen[grid, rung]) < len(self.live[grid]):
            return PAUSE  # until the rest of its grid is here
        return self._decide(tune_controller, grid, rung, trial)

    def _decide(self, tune_controller, grid: tuple, rung: int, current=None) -> str:
        """Keep the rung's best ceil(n / reduction); the current trial's action."""
        self.decided.add((grid, rung))
        ranked = sorted(self.seen[grid, rung].items(), key=lambda item: item[1])
        keep = max(1, math.ceil(len(ranked) / self.reduction))
        action = CONTINUE
        for trial, _ in ranked[:keep]:
            if trial is not current:
                self.resume.add(trial)
        store = OutcomeStore(self.outcomes)
        for trial, _ in ranked[keep:]:
            trial_id = trial.config["trial_id"]
            self.live[grid].discard(trial_id)
            self.stopped += 1
            if trial is current:  # it stored itself paused before it reported the rung
                store.stop_at_rung(trial_id)
                action = STOP
            elif trial.status == Trial.PAUSED or trial.is_saving:  # waits at the rung
                store.stop_at_rung(trial_id)
                tune_controller.stop_trial(trial)
        return action

    def _leave(self, tune_controller, trial) -> None:
        """A trial ended or failed: its grid's pending rung may now be complete."""
        grid, trial_id = self._grid(trial), trial.config.get("trial_id")
        if grid is None or trial_id not in self.live[grid]:
            return
        self.live[grid].discard(trial_id)
        self.resume.discard(trial)
        for rung in self.rungs:
            seen = self.seen[grid, rung]
            seen.pop(trial, None)
            if (grid, rung) in self.decided or not seen:
                continue
            if len(seen) == len(self.live[grid]):
                self._decide(tune_controller, grid, rung)
            break

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._leave(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._leave(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._leave(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        """A paused trial that goes on first (its grid's survivor), then a new one;
        never a trial that waits at a rung."""
        trials = tune_controller.get_trials()
        for trial in trials:
            if trial.status == Trial.PAUSED and trial in self.resume:
                return trial
        for trial in trials:
            if trial.status == Trial.PENDING:
                return trial
        return None

    def debug_string(self) -> str:
        return f"SHA per tuning group: rungs {self.rungs}, {self.stopped} trials stopped"


def grace_epochs(cfg: ExperimentConfig) -> int:
    """``sweep.grace_epochs``, or a quarter of the run (at least 1)."""
    return cfg.sweep.grace_epochs or max(1, cfg.train.epochs // 4)


def make_scheduler(
    cfg: ExperimentConfig, specs: list[TrialSpec], outcomes: str
) -> TrialScheduler | None:
    """The sweep's Tune scheduler: None (FIFO, every trial to the end), GroupedASHA
    or GroupedSHA, marking its decisions in the ``OutcomeStore`` at ``outcomes``."""
    kind = {"asha": GroupedASHA, "sha": GroupedSHA}.get(cfg.sweep.scheduler)
    if kind is None:
        return None
    epochs = max(s.config.train.epochs for s in specs)
    return kind(specs, epochs, grace_epochs(cfg), cfg.sweep.reduction_factor, outcomes)
