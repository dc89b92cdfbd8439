"""One trial of a sweep, as Tune runs it: the param space the sweep gives Tune, the
function trainable that trains one trial from it, and what a trial asks of the
cluster.

A trial with one worker runs the training loop in-process (no worker actors to
start); a trial with more builds a ``TorchTrainer`` whose reports reach Tune through
``TuneReportCallback`` (Train V2's pattern). Every trial stores its outcome
(``OutcomeStore``) before it ends; one whose outcome is already stored (it finished
before an interruption) only reports it.

Tune's param space holds each trial's id only, as plain text; the ``TrialSpec``s
themselves (each config validated once, by the grid's expansion) and the sweep's
``RunPaths`` are bound to the trainable with ``tune.with_parameters``, which puts
them in Ray's object store as they are: nothing is dumped or validated again on the
way to the training loop. Objects in the param space itself would not survive
``--resume``: Tune swaps them for placeholders that only the original param space
resolves, and its experiment state does not keep that. A restored experiment is
given the trainable afresh (``make_trainable``), specs included.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from agd_ray.config import ExperimentConfig
from agd_ray.storage import RunPaths
from agd_ray.sweep.store import DONE, PARTIAL, OutcomeStore
from agd_ray.timeline import mark
from agd_ray.train.wandb_logger import SharedService, join_service, shutdown_service
from agd_ray.trial import TrialInfo, TrialOutcome, TrialSpec


class Stopped(BaseException):
    """A trial that Tune's scheduler stopped (or paused), with the metrics it had
    reported. A BaseException, as Tune's own SystemExit: the trial must end, not be
    retried."""

    def __init__(self, rows: list[dict]):
        super().__init__("stopped")
        self.rows = rows


def _history(rows: list[dict]) -> tuple[list[dict], int | None]:
    """(history, params) of the metrics a trial reported."""
    history = [{k: v for k, v in r.items() if k not in ("status", "params")} for r in rows]
    return history, rows[-1]["params"] if rows else None


def param_space(todo: list[TrialSpec]) -> dict[str, Any]:
    """Tune's param space: one trial per spec, named by its id."""
    from ray import tune

    return {"trial_id": tune.grid_search([s.trial_id for s in todo])}


def trial_name(trial) -> str:
    """A Tune trial's name (and folder name): its trial id."""
    return trial.config["trial_id"]


def make_trainable(
    specs: list[TrialSpec],
    paths: RunPaths,
    every_epoch: bool = False,
    rungs: frozenset[int] = frozenset(),
    pausable: frozenset[str] = frozenset(),
    wandb_service: SharedService | None = None,
) -> Callable:
    """``run_trial`` with the sweep's specs and paths bound, asking Tune for each
    trial's resources (``trial_resources``). ``every_epoch``: in-process trials report
    every epoch's metrics to Tune (ASHA decides on them), not only checkpoints.
    ``rungs``: epochs where successive halving may pause a trial (``sweep.scheduler:
    sha``): a trial of an SHA grid (``pausable``, trial ids) reports a checkpoint
    there, and stores what it has trained first (``PARTIAL``), which the scheduler
    makes ``stopped`` if its grid stops it there. ``wandb_service``: the driver's W&B
    service, which in-process trials on its node log through."""
    from ray import tune

    by_id = {s.trial_id: s for s in specs}

    def resources(params: dict[str, Any]) -> dict[str, float]:
        return trial_resources(_spec(by_id, params["trial_id"]))

    trainable = tune.with_parameters(
        run_trial,
        specs=by_id,
        paths=paths,
        every_epoch=every_epoch,
        rungs=rungs,
        pausable=pausable,
        wandb_service=wandb_service,
    )
    return tune.with_resources(trainable, resources)


def _spec(specs: dict[str, TrialSpec], trial_id: str) -> TrialSpec:
    try:
        return specs[trial_id]
    except KeyError:
        raise KeyError(
            f"trial {trial_id} of the Tune experiment is not in this sweep's grid "
            "(was the config changed before --resume?)"
        ) from None


def run_trial(
    params: dict[str, Any],
    specs: dict[str, TrialSpec],
    paths: RunPaths,
    every_epoch=False,
    rungs: frozenset[int] = frozenset(),
    pausable: frozenset[str] = frozenset(),
    wandb_service: SharedService | None = None,
) -> None:
    """Tune function trainable: one training run, its outcome stored before it ends."""
    import ray.tune

    trial_id = params["trial_id"]
    mark(f"trial {trial_id}: starts")
    store = OutcomeStore(paths.outcomes)
    stored = store.get(trial_id)
    if stored is not None and stored.status in DONE:  # finished before an interruption
        ray.tune.report({"trial_id": trial_id, "status": stored.status})
        return
    spec = _spec(specs, trial_id)
    trial = TrialInfo(spec.trial_id, paths.storage, str(paths.out_dir))  # DIR/wandb/
    started = time.time()

    def so_far(rows: list[dict], status: str) -> TrialOutcome:  # what it has trained
        history, n_params = _history(rows)
        return TrialOutcome(trial_id, status, history, n_params, None, started, time.time())

    failed = False
    try:
        if spec.config.scaling.num_workers == 1:
            join_service(wandb_service)
            rungs = rungs if trial_id in pausable else frozenset()
            pause = (lambda rows: store.put(so_far(rows, PARTIAL))) if rungs else None
            outcome = _train_in_process(spec.config, trial, every_epoch, rungs, pause)
        else:
            outcome = _train_on_workers(spec.config, trial, paths.train_runs)
    except Stopped as stop:  # Tune ended the run: by its scheduler, or the sweep's end
        # stored if the scheduler marked it stopped (else it stays unfinished), unless
        # stored already: by SHA's scheduler at the rung, or by this trial's resumed
        # run when this is the paused run's thread, ended late in a reused actor
        now = store.get(trial_id)
        if store.stop_marked(trial_id) and (now is None or len(stop.rows) > len(now.history)):
            store.put(so_far(stop.rows, "stopped"))
        mark(f"trial {trial_id}: ended by Tune")
        raise SystemExit(0) from None
    except Exception as err:
        failed = True
        store.put(TrialOutcome(spec.trial_id, "failed", error=f"{type(err).__name__}: {err}"))
        raise  # Tune marks the trial errored; --resume runs it again
    finally:  # a run the loop could not finish: finish it before the actor goes
        shutdown_service(failed)
    outcome.started, outcome.finished = started, time.time()
    store.put(outcome)
    mark(f"trial {trial_id}: outcome stored")
    if outcome.status == "failed":
        raise RuntimeError(f"trial {spec.trial_id} failed: {outcome.error}")


def _train_in_process(
    cfg: ExperimentConfig,
    trial: TrialInfo,
    every_epoch: bool,
    rungs: frozenset[int] = frozenset(),
    before_pause: Callable | None = None,
) -> TrialOutcome:
    from agd_ray.train.loop import run_training
    from agd_ray.train.session import tune_session

    session = tune_session(cfg, every_epoch, rungs, before_pause)
    try:
        value = run_training(cfg, session, trial)
    except SystemExit:  # Tune's way of ending a trial its scheduler stopped or paused
        raise Stopped(session.reported) from None
    return TrialOutcome(trial.trial_id, value["status"], value["history"], value["params"])


def _train_on_workers(cfg: ExperimentConfig, trial: TrialInfo, storage: str) -> TrialOutcome:
    from ray.tune.integration.ray_train import TuneReportCallback

    from agd_ray.train.trainer import make_trainer, outcome_from_result

    # The run is named after the trial: a restarted trial resumes its Train run.
    trainer = make_trainer(cfg, trial.trial_id, storage, [TuneReportCallback()], trial)
    return outcome_from_result(trial.trial_id, trainer.fit())


def trial_resources(spec: TrialSpec) -> dict[str, float]:
    """What a trial's own process (its driver) asks of the cluster, plus
    ``scaling.driver_resources`` (e.g. a custom resource that keeps drivers on the
    head node). An in-process trial's driver is its worker: it holds the worker's
    CPUs and (fractional) GPUs. A multi-worker trial's driver holds no CPU (its
    TorchTrainer asks for the workers'; holding even a fraction would leave a cluster
    of exactly their size one CPU short). Tune refuses an empty request, so it asks
    for one byte of memory."""
    from agd_ray.data import streams

    scaling = spec.config.scaling
    driver = scaling.driver_resources or {}
    if scaling.num_workers > 1:
        return {"CPU": 0, "memory": 1, **driver}
    cpus = scaling.worker_cpus(streams(spec.config.data))
    return {"CPU": cpus, "GPU": scaling.gpus_per_worker if scaling.use_gpu else 0, **driver}
