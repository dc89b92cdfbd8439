"""``agd-ray sweep``: Ray Tune over training runs.

Each trial is a Tune function trainable. A trial with one worker runs the training
loop in-process (no worker actors to start); a trial with more builds a
``TorchTrainer`` whose reports reach Tune through ``TuneReportCallback`` (Train V2's
pattern). As many trials run at once as the cluster's CPUs/GPUs allow.

Results: every trial stores its outcome (``OutcomeStore``) before it ends, and the
driver rewrites ``trials.parquet`` / ``epochs.parquet`` as trials finish, so an
interruption loses only the running trials. ``--resume`` restores the Tune
experiment: finished trials are not re-run, interrupted ones continue from their
last checkpoint (Tune's for in-process trials, Train's run of the same name for
multi-worker ones).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agd_ray.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    ScalingConfig,
    validate_config,
)
from agd_ray.data import prepare_data
from agd_ray.sweep.grid import TrialSpec, expand
from agd_ray.sweep.results import write_results
from agd_ray.sweep.store import DONE, OutcomeStore, resolve_uri
from agd_ray.train.loop import TrialInfo
from agd_ray.train.trainer import TrialOutcome


@dataclass
class SweepPaths:
    out_dir: Path  # OUT/<name>: the Parquet files
    storage: str  # Ray's storage: Tune experiment, Train runs, outcomes

    @property
    def outcomes(self) -> str:
        return f"{self.storage}/outcomes"

    @property
    def train_runs(self) -> str:
        return f"{self.storage}/train"

    @property
    def tune_experiment(self) -> str:
        return f"{self.storage}/tune"


def sweep_paths(cfg: ExperimentConfig, out: str | Path) -> SweepPaths:
    out_dir = Path(out).resolve() / cfg.name
    storage = resolve_uri(cfg.scaling.storage_path or str(out_dir / "ray"))
    if cfg.scaling.storage_path:
        storage = f"{storage.rstrip('/')}/{cfg.name}"
    return SweepPaths(out_dir, storage)


# --- the trial (runs in a Tune trial actor) -------------------------------------


def run_trial(param: dict[str, Any]) -> None:
    """Tune function trainable: one training run, its outcome stored before it ends."""
    import ray.tune

    spec = TrialSpec(**param["spec"])
    store = OutcomeStore(param["outcomes"])
    stored = store.get(spec.trial_id)
    if stored is not None and stored.status in DONE:  # finished before an interruption
        ray.tune.report({"trial_id": spec.trial_id, "status": stored.status})
        return
    cfg = validate_config(spec.config)
    trial = TrialInfo(spec.trial_id, param["storage"], param["wandb_dir"])
    started = time.time()
    try:
        if cfg.scaling.num_workers == 1:
            outcome = _train_in_process(cfg, trial)
        else:
            outcome = _train_on_workers(cfg, trial, param["train_runs"])
    except Exception as err:
        store.put(TrialOutcome(spec.trial_id, "failed", error=f"{type(err).__name__}: {err}"))
        raise  # Tune marks the trial errored; --resume runs it again
    outcome.started, outcome.finished = started, time.time()
    store.put(outcome)
    if outcome.status == "failed":
        raise RuntimeError(f"trial {spec.trial_id} failed: {outcome.error}")


def _train_in_process(cfg: ExperimentConfig, trial: TrialInfo) -> TrialOutcome:
    from agd_ray.train.loop import run_training, tune_session

    value = run_training(cfg, tune_session(cfg), trial)
    return TrialOutcome(trial.trial_id, value["status"], value["history"], value["params"])


def _train_on_workers(cfg: ExperimentConfig, trial: TrialInfo, storage: str) -> TrialOutcome:
    from ray.tune.integration.ray_train import TuneReportCallback

    from agd_ray.train.trainer import make_trainer, outcome_from_result

    # The run is named after the trial: a restarted trial resumes its Train run.
    trainer = make_trainer(cfg, trial.trial_id, storage, [TuneReportCallback()], trial)
    return outcome_from_result(trial.trial_id, trainer.fit())


def trial_resources(spec: dict[str, Any]) -> dict[str, float]:
    """An in-process trial holds its worker's resources. A multi-worker trial's own
    process holds no CPU (its TorchTrainer asks for the workers'; holding even a
    fraction would leave a cluster of exactly their size one CPU short). Tune refuses
    an empty request, so it asks for one byte of memory."""
    scaling = spec["spec"]["config"]["scaling"]
    if scaling["num_workers"] > 1:
        return {"CPU": 0, "memory": 1}
    return {"CPU": scaling["cpus_per_worker"], "GPU": 1 if scaling["use_gpu"] else 0}


# --- the driver -------------------------------------------------------------------


def _results_callback(specs: list[TrialSpec], paths: SweepPaths, echo: Callable):
    from ray import tune

    class WriteResults(tune.Callback):
        """On the driver: rewrite the Parquet files and print a line per finished trial."""

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._finished(trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._finished(trial)

        def _finished(self, trial):
            outcomes = OutcomeStore(paths.outcomes).all()
            write_results([(s, outcomes.get(s.trial_id)) for s in specs], paths.out_dir)
            trial_id = trial.config["spec"]["trial_id"]
            spec = next(s for s in specs if s.trial_id == trial_id)
            done = sum(1 for o in outcomes.values() if o.status in DONE)
            echo(f"[{done}/{len(specs)}] " + format_trial(spec, outcomes.get(trial_id)))

    return WriteResults()


def format_trial(spec: TrialSpec, outcome: TrialOutcome | None) -> str:
    swept = " ".join(
        f"{k.split('.')[-1]}={v}"
        for k, v in spec.columns.items()
        if v is not None and k not in ("data.name", "model.arch")
    )
    head = f"{spec.trial_id:<24} {spec.optimizer:<8} {swept} seed={spec.seed}"
    if outcome is None or not outcome.history:
        return f"{head}  {outcome.status if outcome else 'failed'}"
    last = outcome.history[-1]
    eta = f"  eta {last['eta_mean']:.3f}" if last.get("eta_mean") is not None else ""
    return (
        f"{head}  {outcome.status}  test_acc {last['test_acc']:.4f}{eta}  ({last['wall_s']:.1f}s)"
    )


def _trial_name(trial) -> str:
    return trial.config["spec"]["trial_id"]


def default_concurrency(specs: list[TrialSpec]) -> int:
    """Trials that fit on the cluster at once, by their CPU (and GPU) needs."""
    import ray

    total = ray.cluster_resources()
    limits = []
    for s in specs:
        sc = s.config["scaling"]
        cpus = sc["num_workers"] * sc["cpus_per_worker"]
        limit = total.get("CPU", 1) // cpus
        if sc["use_gpu"]:
            limit = min(limit, total.get("GPU", 0) // sc["num_workers"])
        limits.append(limit)
    return max(1, int(min(limits)))


def _grid_key_namer(cfg: ExperimentConfig) -> Callable[[str], str]:
    """Maps a config key to where the user set it: ``sweep.grid.<key>`` if swept."""
    return lambda key: f"sweep.grid.{key}" if key in cfg.sweep.grid else key


def run_sweep(
    cfg: ExperimentConfig, out: str | Path, resume: bool = False, echo: Callable = print
) -> dict[str, TrialOutcome]:
    """Run (or, with ``resume``, finish) the sweep; returns the outcomes by trial id."""
    specs = expand(cfg)  # validates every trial's config before anything starts
    grid_key = _grid_key_namer(cfg)
    for data in {json.dumps(s.config["data"], sort_keys=True) for s in specs}:
        try:
            prepare_data(DataConfig(**json.loads(data)))
        except ConfigError as err:  # e.g. a swept data.root that does not exist
            raise ConfigError(grid_key(err.key), err.problem) from None
    paths = sweep_paths(cfg, out)
    store = OutcomeStore(paths.outcomes)
    stored = store.all()
    if (stored or (paths.out_dir / "trials.parquet").exists()) and not resume:
        raise ConfigError(
            str(paths.out_dir),
            "already holds this sweep's results; pass --resume to finish it, "
            "or choose another --out or name",
        )
    todo = [s for s in specs if not (s.trial_id in stored and stored[s.trial_id].status in DONE)]
    if todo:  # refuse trials the cluster can never hold before writing anything
        from agd_ray.train.resources import check_resources
        from agd_ray.train.trainer import ensure_ray

        ensure_ray()
        check_resources([ScalingConfig(**s.config["scaling"]) for s in todo], grid_key)
    write_results([(s, stored.get(s.trial_id)) for s in specs], paths.out_dir)
    if not todo:
        echo(f"all {len(specs)} trials of {cfg.name} are finished; nothing to run")
        return stored

    from ray import tune

    # Checkpoints are kept per trial (num_to_keep), which forces an experiment
    # snapshot each time: wanted, since it is what --resume restores from.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    concurrency = cfg.sweep.max_concurrent_trials or default_concurrency(specs)
    echo(
        f"sweep {cfg.name}: {len(todo)} of {len(specs)} trials to run, "
        f"{concurrency} at a time -> {paths.out_dir}"
    )
    trainable = tune.with_resources(run_trial, trial_resources)
    callback = _results_callback(specs, paths, echo)
    common = {
        "outcomes": paths.outcomes,
        "train_runs": paths.train_runs,
        "storage": paths.storage,
        "wandb_dir": str(paths.out_dir),  # wandb writes DIR/wandb/
    }
    param_space = {"spec": tune.grid_search([asdict(s) for s in todo]), **common}
    start = time.perf_counter()
    experiment = paths.tune_experiment
    if resume and tune.Tuner.can_restore(experiment):
        tuner = tune.Tuner.restore(
            experiment, trainable, resume_unfinished=True, restart_errored=True
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                max_concurrent_trials=concurrency,
                reuse_actors=True,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=os.path.basename(experiment),
                storage_path=os.path.dirname(experiment),
                callbacks=[callback],
                verbose=0,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            ),
        )
    tuner.fit()
    outcomes = store.all()
    write_results([(s, outcomes.get(s.trial_id)) for s in specs], paths.out_dir)
    echo(f"sweep {cfg.name} finished in {time.perf_counter() - start:.1f}s")
    return outcomes
