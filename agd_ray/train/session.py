"""Where the training loop runs: a Ray Train worker (``train_session``), this
process under Train's local mode (``local_session``: ``agd-ray train`` with one
worker) or in-process inside a Tune trial (``tune_session``). The loop sees only a
``Session``: rank, world, device, and how to prepare the model, report an epoch and
find the checkpoint to resume from."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from torch import nn

from agd_ray.config import ExperimentConfig
from agd_ray.data import ray_datasets, streams


def _quiet_train_reports() -> None:
    """Ray Train logs every report at INFO under a logger named by its file path,
    which ``LoggingConfig`` does not reach; one line per epoch is ours to print."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


@dataclass
class Session:
    """Where the loop runs: a Ray Train worker, or in-process inside a Tune trial.

    ``report(metrics, checkpoint)`` persists the checkpoint (a Ray Checkpoint of a
    local folder) and records the metrics; ``get_checkpoint()`` returns the one a
    restarted run resumes from.
    """

    rank: int
    world: int
    device: torch.device
    prepare_model: Callable[[nn.Module], nn.Module]
    get_checkpoint: Callable[[], Any]
    report: Callable[..., None]
    checkpoint_class: type
    get_dataset_shard: Callable[[str], Any] | None = None  # streaming (Ray Data) splits
    report_every_epoch: bool = True
    """False in-process under Tune: the history reaches the driver in the trial's
    outcome, so only checkpoints are reported (each report is a driver round trip),
    unless a scheduler (ASHA) decides on every epoch."""
    reported: list = field(default_factory=list)
    """Under Tune, every metrics dict reported so far (a stopped trial's history)."""
    checkpoint_epochs: frozenset = frozenset()
    """Epochs (counted from 1) whose report always carries a checkpoint: the rungs
    where successive halving may pause the trial (``sweep.scheduler: sha``)."""


def train_session() -> Session:
    """The session of a Ray Train worker (``TorchTrainer``)."""
    _quiet_train_reports()
    ctx = ray.train.get_context()
    return Session(
        rank=ctx.get_world_rank(),
        world=ctx.get_world_size(),
        device=ray.train.torch.get_device(),
        prepare_model=ray.train.torch.prepare_model,
        get_checkpoint=ray.train.get_checkpoint,
        report=ray.train.report,
        checkpoint_class=ray.train.Checkpoint,
        get_dataset_shard=ray.train.get_dataset_shard,
    )


LOCAL_CHECKPOINTS_KEPT = 2


def local_session(run_dir: str, on_report: Callable[[dict], None]) -> Session:
    """One worker in this very process, under Ray Train's local mode
    (``ScalingConfig(num_workers=0)``): no Ray cluster, controller or worker actors
    to start. Train's local mode keeps checkpoints in memory only, so this session
    persists each one under ``run_dir`` (``checkpoint_<n>/``, the last two kept,
    through pyarrow: a folder or s3://) and resumes from the newest; ``on_report``
    sees every epoch's metrics (the progress line)."""
    from agd_ray.storage import Storage

    store = Storage(run_dir)

    def checkpoints() -> list[str]:  # complete ones, oldest first
        return [n for n in store.listdir() if n.startswith("checkpoint_") and store.listdir(n)]

    def get_checkpoint():
        done = checkpoints()
        if not done:
            return None
        return ray.train.Checkpoint(f"{store.root}/{done[-1]}", filesystem=store.fs)

    def report(metrics: dict, checkpoint=None) -> None:
        if checkpoint is not None:  # each file written whole, then the folder is listed
            done = checkpoints()
            n = int(done[-1].rsplit("_", 1)[1]) + 1 if done else 0
            folder = Path(checkpoint.path)
            for f in sorted(folder.iterdir()):
                store.write_bytes(f"checkpoint_{n:06d}/{f.name}", f.read_bytes())
            for old in checkpoints()[:-LOCAL_CHECKPOINTS_KEPT]:
                store.delete_dir(old)
        ray.train.report(metrics, checkpoint=checkpoint)  # Train's local mode keeps it
        on_report(metrics)

    return Session(
        rank=0,
        world=1,
        device=ray.train.torch.get_device(),
        prepare_model=ray.train.torch.prepare_model,
        get_checkpoint=get_checkpoint,
        report=report,
        checkpoint_class=ray.train.Checkpoint,
    )


def tune_session(
    cfg: ExperimentConfig,
    report_every_epoch: bool = False,
    checkpoint_epochs: frozenset = frozenset(),
    before_pause: Callable[[list[dict]], None] | None = None,
) -> Session:
    """In-process inside a Tune trial: one worker, reports and checkpoints go to Tune;
    streaming datasets are built here and read whole. ``before_pause(reported)`` runs
    before each report at one of ``checkpoint_epochs``, where the trial may be paused
    (and, later, stopped without running again)."""
    import ray.train._internal.storage as tune_storage
    import ray.tune

    # Tune logs every persisted checkpoint at INFO; the driver prints a line per trial.
    logging.getLogger(tune_storage.__name__).setLevel(logging.WARNING)
    device = torch.device("cuda" if cfg.scaling.use_gpu and torch.cuda.is_available() else "cpu")
    datasets = None
    if streams(cfg.data):
        datasets = ray_datasets(cfg.data, cfg.train.seed, cfg.model.context)
    reported: list[dict] = []

    def report(metrics: dict, checkpoint=None) -> None:
        reported.append(metrics)  # first: a stopped trial ends inside ray.tune.report
        if before_pause is not None and metrics.get("epoch", -1) + 1 in checkpoint_epochs:
            before_pause(reported)
        ray.tune.report(metrics, checkpoint=checkpoint)

    return Session(
        rank=0,
        world=1,
        device=device,
        prepare_model=lambda m: m.to(device),
        get_checkpoint=ray.tune.get_checkpoint,
        report=report,
        checkpoint_class=ray.tune.Checkpoint,
        get_dataset_shard=datasets.__getitem__ if datasets else None,
        report_every_epoch=report_every_epoch,
        reported=reported,
        checkpoint_epochs=checkpoint_epochs,
    )
