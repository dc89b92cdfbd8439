"""Run one training through Ray Train's TorchTrainer and write its result files.

    agd-ray train experiments/quickstart.yaml --set train.epochs=20

The driver validates the config and prepares the data before any Ray work starts,
starts (or joins, via RAY_ADDRESS or a running ``ray start``) Ray, runs the
TorchTrainer and prints one line per epoch as the workers report.

A one-worker run on this machine (no RAY_ADDRESS, data in memory) runs under Train's
local mode instead (``local_mode``): the loop runs in this process, with no Ray
cluster, controller or worker process to start, and its checkpoints are persisted
by ``local_session`` in the same place, so ``--resume`` works alike.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train import UserCallback
from ray.train.torch import TorchTrainer
from ray.util.queue import Empty, Queue

from agd_ray.config import ConfigError, ExperimentConfig, dump_config
from agd_ray.data import prepare_data
from agd_ray.lock import HomeLock
from agd_ray.ray_setup import apply_env_defaults, ensure_ray, quiet_data, say
from agd_ray.results import save_results
from agd_ray.storage import CONFIG_FILE, RunPaths, Storage, config_hash, provenance, run_paths
from agd_ray.timeline import mark
from agd_ray.train.loop import CHECKPOINT_FILE, train_loop_config, train_loop_per_worker
from agd_ray.train.resources import check_resources
from agd_ray.train.session import local_session
from agd_ray.trial import TrialInfo, TrialOutcome, single_trial


def local_mode(cfg: ExperimentConfig) -> bool:
    """Whether ``agd-ray train`` runs ``cfg`` under Train's local mode: one worker,
    data in memory (not streamed by Ray Data), and no cluster to join (RAY_ADDRESS)."""
    from agd_ray.data import streams

    single = cfg.scaling.num_workers == 1 and not streams(cfg.data)
    return single and not os.environ.get("RAY_ADDRESS")


def make_trainer(
    cfg: ExperimentConfig,
    run_name: str,
    storage_path: str,
    callbacks: list[UserCallback] | None = None,
    trial: TrialInfo | None = None,
    on_report=None,
) -> TorchTrainer:
    """A TorchTrainer for ``cfg``, its run named ``run_name`` under ``storage_path``
    (a run of the same name and storage is resumed from its last checkpoint).

    Each worker reserves ``scaling.cpus_per_worker`` (and ``gpus_per_worker`` with
    use_gpu, fractions allowed). Data streamed by Ray Data take what the workers
    leave: Train registers its workers' reservation with Ray Data, whose tasks get
    the rest of the cluster, so streaming runs default to half a CPU per worker
    (``ScalingConfig.worker_cpus``) and ``check_resources`` refuses a run that
    leaves the pipeline no CPU.

    With ``on_report`` (a function of each epoch's metrics), the trainer runs under
    Train's local mode in this process, its checkpoints in ``storage_path/run_name``."""
    from agd_ray.data import streams

    apply_env_defaults()  # e.g. the controller's poll interval, read from here
    s = cfg.scaling
    datasets = None
    if streams(cfg.data):  # streamed to the workers by Ray Data
        from agd_ray.data import ray_datasets

        datasets = ray_datasets(cfg.data, cfg.train.seed, cfg.model.context)
        if os.environ.get("RAY_DATA_DISABLE_PROGRESS_BARS") == "1":  # not --verbose
            quiet_data()  # its INFO lines too (Ray Data was imported just now)
    per_worker = {"CPU": s.worker_cpus(streaming=datasets is not None)}
    if s.use_gpu:
        per_worker["GPU"] = s.gpus_per_worker
    loop_config = train_loop_config(cfg, trial or TrialInfo(run_name, storage_path))
    if on_report is not None:  # local mode: this process, checkpoints persisted by us
        run_dir = f"{storage_path.rstrip('/')}/{run_name}"
        loop_config["session"] = lambda: local_session(run_dir, on_report)
        scaling = ray.train.ScalingConfig(num_workers=0, use_gpu=s.use_gpu)
    else:
        scaling = ray.train.ScalingConfig(
            num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=per_worker
        )
    return TorchTrainer(
        train_loop_per_worker,
        datasets=datasets,
        train_loop_config=loop_config,
        scaling_config=scaling,
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=s.max_failures),
            callbacks=callbacks,
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )


class EpochQueueCallback(UserCallback):
    """Runs on the Train controller: forwards each epoch's rank-0 metrics to a queue
    that the driver reads (so progress lines print on the driver, unprefixed)."""

    def __init__(self, queue: Queue):
        self.queue = queue

    def after_report(self, run_context, metrics, checkpoint):
        self.queue.put(metrics[0])


def format_epoch(m: dict[str, Any], epochs: int) -> str:
    eta = f"  eta {m['eta_mean']:.4f}" if m.get("eta_mean") is not None else ""
    val = f"  val_loss {m['val_loss']:.4f}" if m.get("val_loss") is not None else ""
    if m.get("tokens") is not None:  # a language model: bits per token, tokens/s
        bits = f"  val_bits {m['val_bits']:.3f}" if m.get("val_bits") is not None else ""
        return (
            f"epoch {m['epoch'] + 1:>3}/{epochs}  train_loss {m['train_loss']:.4f}"
            f"{val}{bits}  test_loss {m['test_loss']:.4f}{eta}"
            f"  {m['tokens']:,} tokens  {m['tokens_per_s']:,.0f} tokens/s  {m['wall_s']:.1f}s"
        )
    return (
        f"epoch {m['epoch'] + 1:>3}/{epochs}  train_loss {m['train_loss']:.4f}"
        f"  train_acc {m['train_acc']:.3f}{val}  test_loss {m['test_loss']:.4f}"
        f"  test_acc {m['test_acc']:.3f}{eta}  batch {m['batch_size']}"
        f"  {m['samples_per_s']:,.0f} samples/s"
        f"  {m['wall_s']:.1f}s"
    )


def run_train(
    cfg: ExperimentConfig,
    out: str | Path,
    echo=say,
    verbose: bool = False,
    resume: bool = False,
) -> TrialOutcome:
    """Train ``cfg`` once on Ray Train; write OUT/<name>/{trials,epochs}.parquet (and
    copy them to ``<scaling.storage_path>/<name>`` when set). The run is named from
    the config's hash: ``resume`` continues it from its last checkpoint, and without
    it a run that exists already is refused. ``verbose`` shows Ray's own output too
    (see ``agd_ray.ray_setup``)."""
    spec = prepare_data(cfg.data, model=cfg.model)  # a missing data.root: before Ray starts
    paths = run_paths(cfg, out)
    run_name = f"train-{config_hash(cfg)[:8]}"
    with HomeLock(paths.home):
        exists = Storage(paths.train_runs).exists(run_name)
        if exists and not resume:
            raise ConfigError(
                paths.home,
                f"already holds a run of this config ({run_name}); pass --resume to "
                "continue it, or choose another --out or name",
            )
        if resume and not exists:
            raise ConfigError(paths.home, f"has no run of this config ({run_name}) to resume")
        echo(
            f"{'resuming' if resume else 'training'} {cfg.model.arch} depth {cfg.model.depth} "
            f"width {cfg.model.width} on {spec.name} with {cfg.optimizer.name}: "
            f"{cfg.train.epochs} epochs, batch {cfg.train.batch_size}, "
            f"{cfg.scaling.num_workers} worker(s)"
        )
        mark("driver: config valid, data prepared")
        local = local_mode(cfg)
        if local:  # no Ray to start; only a GPU asked for and missing to refuse
            _check_local_gpu(cfg)
        else:
            ensure_ray(verbose)
            mark("driver: ray ready")
            check_resources([cfg])  # fail now rather than wait forever for them
        Storage(paths.home).write_bytes(CONFIG_FILE, dump_config(cfg).encode())
        if local and not verbose:  # local mode's INFO lines (each report, the device)
            logging.getLogger("ray.train").setLevel(logging.WARNING)
        outcome = _fit(cfg, paths, run_name, echo, local)
        prov = provenance(cfg, {spec.name: spec.fingerprint} if spec.fingerprint else None)
        save_results([(single_trial(cfg), outcome)], paths, prov)
        mark("driver: results written")
    return outcome


def _check_local_gpu(cfg: ExperimentConfig) -> None:
    import torch

    if cfg.scaling.use_gpu and not torch.cuda.is_available():
        raise ConfigError(
            "scaling.use_gpu",
            "the cluster has no GPUs (this machine, which runs a one-worker train "
            "itself); set scaling.use_gpu: false to train on CPUs",
        )


def _fit(cfg: ExperimentConfig, paths: RunPaths, run_name: str, echo, local: bool) -> TrialOutcome:
    """Run the trainer, printing each epoch's line as rank 0 reports it."""
    trial = TrialInfo(cfg.name, paths.storage, wandb_dir=str(paths.out_dir))  # DIR/wandb/
    if local:
        return _fit_local(cfg, paths, run_name, echo, trial)
    queue = Queue()
    stop = threading.Event()

    def show_progress():
        while not stop.is_set() or not queue.empty():
            try:
                echo(format_epoch(queue.get(timeout=0.5), cfg.train.epochs))
            except Empty:
                continue

    printer = threading.Thread(target=show_progress, daemon=True)
    printer.start()
    trainer = make_trainer(cfg, run_name, paths.train_runs, [EpochQueueCallback(queue)], trial)
    outcome = TrialOutcome(trial_id=cfg.name, status="failed")
    try:
        mark("driver: fit starts")
        result = trainer.fit()
        mark("driver: fit returned")
        outcome = outcome_from_result(cfg.name, result)
    except Exception as err:  # a failed run still writes what it reported
        outcome.error = f"{type(err).__name__}: {err}"
    finally:
        stop.set()
        printer.join(timeout=5)
    return outcome


def _fit_local(
    cfg: ExperimentConfig, paths: RunPaths, run_name: str, echo, trial: TrialInfo
) -> TrialOutcome:
    """``_fit`` under Train's local mode: the loop runs here and prints its own lines."""

    def on_report(metrics: dict) -> None:
        echo(format_epoch(metrics, cfg.train.epochs))

    trainer = make_trainer(cfg, run_name, paths.train_runs, None, trial, on_report)
    try:
        mark("driver: fit starts")
        return outcome_from_result(cfg.name, trainer.fit())
    except Exception as err:  # a failed run still writes what its checkpoint holds
        outcome = TrialOutcome(trial_id=cfg.name, status="failed")
        outcome.error = f"{type(err).__name__}: {err}"
        checkpoint = local_session(f"{paths.train_runs}/{run_name}", print).get_checkpoint()
        if checkpoint is not None:
            outcome.history = _checkpoint_history(checkpoint)
        return outcome


def _checkpoint_history(checkpoint) -> list[dict]:
    import torch

    with checkpoint.as_directory() as d:
        ckpt = torch.load(os.path.join(d, CHECKPOINT_FILE), weights_only=False)
    return ckpt["state"]["history"]


def outcome_from_result(trial_id: str, result) -> TrialOutcome:
    """History from rank 0's return value, or from the last checkpoint if it failed."""
    value = result.return_value
    if value is not None and result.error is None:
        return TrialOutcome(trial_id, value["status"], value["history"], value["params"])
    outcome = TrialOutcome(trial_id, "failed", error=str(result.error))
    if result.checkpoint is not None:
        outcome.history = _checkpoint_history(result.checkpoint)
    if result.metrics:
        outcome.params = result.metrics.get("params")
    return outcome
