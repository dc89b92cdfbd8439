"""``agd-ray sweep``: Ray Tune over training runs, driven from here.

``run_sweep`` expands the grid (every trial's config validated there, once), refuses
what cannot run before Ray starts, and runs one Tune trial per spec
(``agd_ray.sweep.trainable``) as many at once as the cluster's CPUs/GPUs allow. The
driver's callback (``agd_ray.sweep.callback``) rewrites ``trials.parquet`` /
``epochs.parquet`` as trials finish and shows the console (``agd_ray.sweep.console``):
a header, a progress line while trials run, a line per finished trial. Ray's own
output shows with ``verbose`` (``agd_ray.ray_setup``). It returns a ``SweepResult``
that the command prints its summary from.

Results: every trial stores its outcome (``OutcomeStore``) before it ends, so an
interruption loses only the running trials. ``--resume`` restores the Tune
experiment: finished trials are not re-run, interrupted ones continue from their
last checkpoint (Tune's for in-process trials, Train's run of the same name for
multi-worker ones).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agd_ray.config import ConfigError, ExperimentConfig, dump_config
from agd_ray.data import prepare_data
from agd_ray.lock import HomeLock
from agd_ray.ray_setup import ensure_ray, say, tune_verbosity
from agd_ray.results import save_results, trial_row
from agd_ray.storage import CONFIG_FILE, RunPaths, Storage, provenance, run_paths
from agd_ray.sweep.callback import sweep_callback
from agd_ray.sweep.cost import epoch_work
from agd_ray.sweep.grid import expand
from agd_ray.sweep.repair import restore_lost_checkpoints
from agd_ray.sweep.scheduler import GroupedSHA, make_scheduler
from agd_ray.sweep.store import OutcomeStore, unfinished
from agd_ray.sweep.summary import Entry, summarise
from agd_ray.sweep.trainable import make_trainable, param_space, trial_name
from agd_ray.timeline import mark
from agd_ray.train.resources import default_concurrency
from agd_ray.train.wandb_logger import driver_service
from agd_ray.trial import TrialOutcome, TrialSpec

STATUSES = ("completed", "diverged", "stopped", "failed", "unfinished")
EARLY_STOPPING = {
    "asha": ", ASHA on the baselines' grids",
    "sha": ", successive halving on the baselines' grids",
}


@dataclass
class SweepResult:
    """What a sweep came to: every trial (``specs``, in the grid's order) with its
    outcome by trial id (none for a trial that did not finish), and where its
    result files are."""

    cfg: ExperimentConfig
    specs: list[TrialSpec]
    outcomes: dict[str, TrialOutcome]
    paths: RunPaths  # out_dir (OUT/<name>) and home: trials.parquet, epochs.parquet

    @property
    def out_dir(self) -> Path:
        return self.paths.out_dir

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The rows of trials.parquet, one per trial."""
        return [trial_row(s, self.outcomes.get(s.trial_id)) for s in self.specs]

    @property
    def summary(self) -> dict[str, list[Entry]]:
        """The closing table: per tuning group, AGD against each baseline's best."""
        return summarise(self.rows, agd=self.cfg.optimizer.name)

    @property
    def counts(self) -> dict[str, int]:
        """Trials by status (``STATUSES``; unfinished: no stored outcome yet)."""
        counts = dict.fromkeys(STATUSES, 0)
        for s in self.specs:
            outcome = self.outcomes.get(s.trial_id)
            status = outcome.status if outcome else "unfinished"
            counts[status if status in counts else "unfinished"] += 1
        return counts

    @property
    def ok(self) -> bool:
        """Every trial finished: completed or diverged."""
        counts = self.counts
        return counts["failed"] + counts["unfinished"] == 0


def _grid_key_namer(cfg: ExperimentConfig) -> Callable[[str], str]:
    """Maps a config key to where the user set it: ``sweep.grid.<key>`` if swept."""
    return lambda key: f"sweep.grid.{key}" if key in cfg.sweep.grid else key


def run_sweep(
    cfg: ExperimentConfig,
    out: str | Path,
    resume: bool = False,
    echo: Callable = say,
    verbose: bool = False,
) -> SweepResult:
    """Run (or, with ``resume``, finish) the sweep; returns every trial with its
    outcome. ``verbose`` shows Ray's own output too (see ``agd_ray.ray_setup``).
    The sweep's home is held by this driver alone while it runs (``HomeLock``)."""
    specs = expand(cfg)  # validates every trial's config before anything starts
    grid_key = _grid_key_namer(cfg)
    fingerprints, prepared = {}, {}
    for key, (data, model) in _datasets(specs).items():  # each dataset once
        try:
            prepared[key] = spec = prepare_data(data, model=model)
        except ConfigError as err:  # e.g. a swept data.root that does not exist
            raise ConfigError(grid_key(err.key), err.problem) from None
        if spec.fingerprint:
            fingerprints[spec.name] = spec.fingerprint
    paths = run_paths(cfg, out)
    mark("driver: trials expanded, data prepared")
    with HomeLock(paths.home):
        data_specs = {s.trial_id: prepared[_data_key(s)] for s in specs}
        return _run(cfg, specs, paths, resume, echo, verbose, fingerprints, data_specs)


def _data_key(spec: TrialSpec) -> tuple:
    """What prepares a trial's dataset: text is cut to the model's context and
    checked against its vocabulary."""
    data, model = spec.config.data, spec.config.model
    return (data, model.context, model.vocab) if data.is_text else (data,)


def _datasets(specs: list[TrialSpec]) -> dict[tuple, tuple]:
    """Each distinct (data, model) pair that prepares a dataset differently, by its
    ``_data_key``."""
    pairs = {}
    for s in specs:
        pairs.setdefault(_data_key(s), (s.config.data, s.config.model))
    return pairs


def _run(
    cfg: ExperimentConfig,
    specs: list[TrialSpec],
    paths: RunPaths,
    resume: bool,
    echo: Callable,
    verbose: bool,
    fingerprints: dict[str, str],
    data_specs: dict,
) -> SweepResult:
    store = OutcomeStore(paths.outcomes)
    stored = store.all()
    home = Storage(paths.home)
    if (stored or home.exists("trials.parquet")) and not resume:
        raise ConfigError(
            paths.home,
            "already holds this sweep's results; pass --resume to finish it, "
            "or choose another --out or name",
        )
    todo = unfinished(specs, stored)
    grid_key = _grid_key_namer(cfg)
    if todo:  # refuse trials the cluster can never hold before writing anything
        from agd_ray.train.resources import check_resources

        ensure_ray(verbose)
        mark("driver: ray ready")
        check_resources([s.config for s in todo], grid_key, trials=True)
    home.write_bytes(CONFIG_FILE, dump_config(cfg).encode())  # --resume from the home alone
    prov = provenance(cfg, fingerprints)
    save_results([(s, stored.get(s.trial_id)) for s in specs], paths, prov)
    if not todo:
        echo(f"all {len(specs)} trials of {cfg.name} are finished; nothing to run")
        return SweepResult(cfg, specs, stored, paths)

    from ray import tune

    concurrency = cfg.sweep.max_concurrent_trials or default_concurrency(specs)
    where = f"{paths.out_dir}" + (f" and {paths.home}" if paths.remote else "")
    early = cfg.sweep.scheduler != "fifo"
    scheduler = make_scheduler(cfg, todo, paths.outcomes)
    # SHA's rungs and the trials it may pause there (they checkpoint at each rung)
    sha = isinstance(scheduler, GroupedSHA)
    rungs = frozenset(scheduler.rungs) if sha else frozenset()
    pausable = frozenset(scheduler.grid_of) if sha else frozenset()
    stopping = EARLY_STOPPING.get(cfg.sweep.scheduler, "")
    if rungs:
        at = ", ".join(str(r) for r in sorted(rungs))
        stopping += f" (rungs at epochs {at}, the best 1/{cfg.sweep.reduction_factor:g} go on)"
    echo(
        f"sweep {cfg.name}: {len(todo)} of {len(specs)} trials to run, "
        f"{concurrency} at a time{stopping} -> {where}"
    )
    trainable = make_trainable(
        specs,
        paths,
        every_epoch=early,
        rungs=rungs,
        pausable=pausable,
        wandb_service=driver_service(cfg),
    )
    callback = sweep_callback(specs, paths, echo, prov, epoch_work(todo, data_specs))
    start = time.perf_counter()
    experiment = paths.tune_experiment
    if not verbose:
        _quiet_tune()
    if resume and tune.Tuner.can_restore(experiment):
        # a kill between Tune's deletion of a checkpoint and its next state save
        if put_back := restore_lost_checkpoints(experiment):
            names = ", ".join("/".join(p.rstrip("/").split("/")[-2:]) for p in put_back)
            echo(f"--resume: put back {len(put_back)} checkpoint(s) a kill had lost: {names}")
        tuner = tune.Tuner.restore(
            experiment, trainable, resume_unfinished=True, restart_errored=True
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(todo),
            tune_config=tune.TuneConfig(
                # a trial paused at an SHA rung counts against Tune's limit: with every
                # slot held by trials waiting for grid-mates not yet created, the sweep
                # would wait forever; the resources alone set SHA's concurrency
                max_concurrent_trials=None if cfg.sweep.scheduler == "sha" else concurrency,
                scheduler=scheduler,
                reuse_actors=True,
                trial_name_creator=trial_name,
                trial_dirname_creator=trial_name,
            ),
            run_config=tune.RunConfig(
                name=os.path.basename(experiment),
                storage_path=os.path.dirname(experiment),
                callbacks=[callback],
                verbose=tune_verbosity(verbose),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                failure_config=tune.FailureConfig(max_failures=cfg.sweep.max_failures),
            ),
        )
    mark("driver: tuner.fit starts")
    tuner.fit()
    mark("driver: tuner.fit returned")
    outcomes = store.all()
    save_results([(s, outcomes.get(s.trial_id)) for s in specs], paths, prov)
    mark("driver: results written")
    took = time.perf_counter() - start
    left = len(unfinished(todo, outcomes))
    if left:  # interrupted (Ctrl-C), or trials failed
        echo(
            f"sweep {cfg.name} ended after {took:.1f}s with {left} of {len(specs)} trials "
            "unfinished; the same command with --resume runs them"
        )
    else:
        echo(f"sweep {cfg.name} finished in {took:.1f}s")
    return SweepResult(cfg, specs, outcomes, paths)


class _NoTuneRestoreHint(logging.Filter):
    """Tune's advice on an interrupted run names its Python API (``Tuner.restore``);
    the sweep's own last line says how to go on (``--resume``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore" not in record.getMessage()


def _quiet_tune() -> None:
    """Tune's warnings that say nothing to a user of the CLI: a resumed (SHA-paused)
    trial's result.json not in the storage yet (Tune goes on appending to its local
    copy), the metrics of trials an interruption left unstarted (results come from
    the outcomes), and its ``Tuner.restore`` hint."""
    logging.getLogger("ray.tune.logger.logger").setLevel(logging.ERROR)
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    tune_log = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, _NoTuneRestoreHint) for f in tune_log.filters):
        tune_log.addFilter(_NoTuneRestoreHint())
