"""``agd-ray sweep``: Ray Tune over training runs.

Each trial is a Tune function trainable. A trial with one worker runs the training
loop in-process (no worker actors to start); a trial with more builds a
``TorchTrainer`` whose reports reach Tune through ``TuneReportCallback`` (Train V2's
pattern). As many trials run at once as the cluster's CPUs/GPUs allow.

Console: a header, a progress line while trials run (each running trial's last
reported epoch, trials done, an ETA; rewritten in place on a terminal, every
``AGD_RAY_PROGRESS_S`` seconds otherwise), a line per finished trial, the summary.
Ray's own output shows with ``verbose`` (``agd_ray.ray_setup``).

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
import shutil
import sys
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
from agd_ray.ray_setup import ensure_ray, tune_verbosity
from agd_ray.results import write_results
from agd_ray.sweep.grid import expand
from agd_ray.sweep.store import DONE, OutcomeStore, resolve_uri
from agd_ray.train.wandb_logger import shutdown_service
from agd_ray.trial import TrialInfo, TrialOutcome, TrialSpec


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
    finally:  # a run the loop could not finish: finish it before the actor goes
        shutdown_service()
    outcome.started, outcome.finished = started, time.time()
    store.put(outcome)
    if outcome.status == "failed":
        raise RuntimeError(f"trial {spec.trial_id} failed: {outcome.error}")


def _train_in_process(cfg: ExperimentConfig, trial: TrialInfo) -> TrialOutcome:
    from agd_ray.train.loop import run_training
    from agd_ray.train.session import tune_session

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


def _sweep_callback(specs: list[TrialSpec], paths: SweepPaths, echo: Callable):
    from ray import tune

    def progress() -> SweepProgress:
        return SweepProgress(specs, _todo(specs, OutcomeStore(paths.outcomes).all()), echo)

    class SweepCallback(tune.Callback):
        """On the driver: rewrite the Parquet files and print a line per finished
        trial; while trials run, show their progress (``SweepProgress``). A restored
        experiment brings this object back from its pickle: the progress starts
        afresh, from the stored outcomes, in ``setup``."""

        def __init__(self):
            self.progress = progress()
            self.pids: set[tuple[str, int]] = set()  # (node ip, pid) of trial actors

        def setup(self, **info):
            self.progress = progress()
            self.pids = set()

        def on_trial_start(self, iteration, trials, trial, **info):
            self.progress.started(_trial_name(trial))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.progress.result(_trial_name(trial), result)
            if "pid" in result:
                self.pids.add((result.get("node_ip", ""), result["pid"]))

        def on_step_end(self, iteration, trials, **info):
            self.progress.tick()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._finished(trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._finished(trial)

        def on_experiment_end(self, trials, **info):
            self.progress.stop()
            _wait_for_trial_actors(self.pids)

        def _finished(self, trial):
            outcomes = OutcomeStore(paths.outcomes).all()
            write_results([(s, outcomes.get(s.trial_id)) for s in specs], paths.out_dir)
            trial_id = _trial_name(trial)
            spec = next(s for s in specs if s.trial_id == trial_id)
            done = sum(1 for o in outcomes.values() if o.status in DONE)
            line = f"[{done}/{len(specs)}] " + format_trial(spec, outcomes.get(trial_id))
            self.progress.finished(trial_id, line)

    return SweepCallback()


def _wait_for_trial_actors(pids: set[tuple[str, int]], timeout_s: float = 10.0) -> None:
    """Wait (a little) until this node's trial actor processes have exited.

    Tune has told them to stop when the experiment ends, but a process still runs
    its interpreter's shutdown for a moment after saying so; a driver that exits
    then (ending a local Ray) has them killed by SIGTERM mid-shutdown, and Ray's
    handler prints a ``SystemExit`` traceback in each one's log."""
    import ray

    here = ray.util.get_node_ip_address()
    local = {pid for ip, pid in pids if ip == here}
    deadline = time.monotonic() + timeout_s
    while local and time.monotonic() < deadline:
        local = {pid for pid in local if _process_runs(pid)}
        if local:
            time.sleep(0.1)


def _process_runs(pid: int) -> bool:
    if os.path.isdir("/proc"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    try:  # no /proc (macOS): the signal-0 probe
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class SweepProgress:
    """The console while a sweep runs, fed by the Tune callback on the driver.

    A progress line names the running trials with their last reported epoch and
    metrics (in-process trials report at their checkpoints, at most every
    ``train.checkpoint_min_s``; multi-worker trials every epoch), the trials done
    and an ETA (elapsed time scaled by the epochs left). On a terminal (``live``)
    it is one status line rewritten in place, cleared before other lines print;
    elsewhere (pipes, job logs) it is printed every ``every_s`` seconds
    (``AGD_RAY_PROGRESS_S``, default 30)."""

    SHOWN = 4  # running trials named on the line; more are counted

    def __init__(
        self,
        specs: list[TrialSpec],
        todo: list[TrialSpec],
        echo: Callable = print,
        live: bool | None = None,
        every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.echo = echo
        self.total = len(specs)
        self.ended = len(specs) - len(todo)  # trials done before a --resume
        self.epochs = {s.trial_id: s.config["train"]["epochs"] for s in todo}
        self.done_epochs = 0  # of trials that ended in this run
        self.running: dict[str, dict[str, Any]] = {}  # trial id -> last result
        if live is None:
            live = echo is print and sys.stdout.isatty()
        self.live = live
        if every_s is None:
            every_s = 1.0 if live else float(os.environ.get("AGD_RAY_PROGRESS_S", "30"))
        self.every_s = every_s
        self.clock = clock
        self.t0 = clock()
        self.last_line = self.t0  # the first line after every_s
        self.shown = False  # a live status line is on screen

    def start(self) -> None:
        self.t0 = self.last_line = self.clock()

    def started(self, trial_id: str) -> None:
        self.running.setdefault(trial_id, {})

    def result(self, trial_id: str, result: dict[str, Any]) -> None:
        if "epoch" in result:
            self.running[trial_id] = result

    def finished(self, trial_id: str, line: str) -> None:
        self.running.pop(trial_id, None)
        if trial_id in self.epochs:  # not one counted as done before a --resume
            self.ended += 1
            self.done_epochs += self.epochs.pop(trial_id)
        self._print(line)

    def tick(self) -> None:
        now = self.clock()
        if self.running and now - self.last_line >= self.every_s:
            self.last_line = now
            self._status(self.line(now))

    def stop(self) -> None:
        self._clear()

    def eta_s(self, now: float) -> float | None:
        """Elapsed time x epochs left / epochs done (None before any epoch)."""
        total = self.done_epochs + sum(self.epochs.values())
        done = self.done_epochs + sum(r["epoch"] + 1 for r in self.running.values() if r)
        if done <= 0:
            return None
        return (now - self.t0) * max(total - done, 0) / done

    def line(self, now: float) -> str:
        head = f"{self.ended}/{self.total} done, {len(self.running)} running"
        head += f", {_duration(now - self.t0)} elapsed"
        eta = self.eta_s(now)
        if eta is not None:
            head += f", eta {_duration(eta)}"
        trials = []
        for trial_id, r in list(self.running.items())[: self.SHOWN]:
            if not r:
                trials.append(f"{trial_id} starting")
                continue
            text = f"{trial_id} epoch {r['epoch'] + 1}/{self.epochs.get(trial_id, '?')}"
            for key, fmt in (("val_loss", ".4f"), ("test_acc", ".3f")):
                if isinstance(r.get(key), (int, float)):
                    text += f" {key} {r[key]:{fmt}}"
            trials.append(text)
        if len(self.running) > self.SHOWN:
            trials.append(f"+{len(self.running) - self.SHOWN} more")
        return f"  ... {head} | " + " | ".join(trials)

    def _print(self, line: str) -> None:
        self._clear()
        self.echo(line)

    def _status(self, line: str) -> None:
        if not self.live:
            self.echo(line)
            return
        width = shutil.get_terminal_size().columns - 1
        sys.stdout.write("\r\033[K" + line[:width])
        sys.stdout.flush()
        self.shown = True

    def _clear(self) -> None:
        if self.shown:
            sys.stdout.write("\r\033[K")
            sys.stdout.flush()
            self.shown = False


def format_trial(spec: TrialSpec, outcome: TrialOutcome | None) -> str:
    swept = " ".join(
        f"{k.split('.')[-1]}={v}"
        for k, v in spec.columns.items()
        if v is not None and k not in ("data.name", "model.arch")
    )
    head = f"{spec.trial_id:<24} {spec.optimizer:<8} {swept} seed={spec.seed}"
    error = ""  # a failed trial's line says why (its first line)
    if outcome is not None and outcome.status == "failed" and (outcome.error or "").strip():
        error = f"  {outcome.error.strip().splitlines()[0][:200]}"
    if outcome is None or not outcome.history:
        return f"{head}  {outcome.status if outcome else 'failed'}{error}"
    last = outcome.history[-1]
    eta = f"  eta {last['eta_mean']:.3f}" if last.get("eta_mean") is not None else ""
    return (
        f"{head}  {outcome.status}  test_acc {last['test_acc']:.4f}{eta}"
        f"  ({last['wall_s']:.1f}s){error}"
    )


def _todo(specs: list[TrialSpec], stored: dict[str, TrialOutcome]) -> list[TrialSpec]:
    """The trials without a finished (completed or diverged) stored outcome."""
    return [s for s in specs if not (s.trial_id in stored and stored[s.trial_id].status in DONE)]


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
    cfg: ExperimentConfig,
    out: str | Path,
    resume: bool = False,
    echo: Callable = print,
    verbose: bool = False,
) -> dict[str, TrialOutcome]:
    """Run (or, with ``resume``, finish) the sweep; returns the outcomes by trial id.
    ``verbose`` shows Ray's own output too (see ``agd_ray.ray_setup``)."""
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
    todo = _todo(specs, stored)
    if todo:  # refuse trials the cluster can never hold before writing anything
        from agd_ray.train.resources import check_resources

        ensure_ray(verbose)
        check_resources([ScalingConfig(**s.config["scaling"]) for s in todo], grid_key)
    write_results([(s, stored.get(s.trial_id)) for s in specs], paths.out_dir)
    if not todo:
        echo(f"all {len(specs)} trials of {cfg.name} are finished; nothing to run")
        return stored

    from ray import tune

    concurrency = cfg.sweep.max_concurrent_trials or default_concurrency(specs)
    echo(
        f"sweep {cfg.name}: {len(todo)} of {len(specs)} trials to run, "
        f"{concurrency} at a time -> {paths.out_dir}"
    )
    trainable = tune.with_resources(run_trial, trial_resources)
    callback = _sweep_callback(specs, paths, echo)
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
                verbose=tune_verbosity(verbose),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            ),
        )
    tuner.fit()
    outcomes = store.all()
    write_results([(s, outcomes.get(s.trial_id)) for s in specs], paths.out_dir)
    echo(f"sweep {cfg.name} finished in {time.perf_counter() - start:.1f}s")
    return outcomes
