"""The per-worker training loop that Ray Train's ``TorchTrainer`` runs on every worker.

    TorchTrainer(train_loop_per_worker, train_loop_config=train_loop_config(cfg, trial), ...)

Per epoch: one pass over this worker's slices of the global batches, an evaluation
of the test split (each worker a shard; sums all-reduced), and one
``ray.train.report`` carrying a checkpoint (model, optimizer, epoch, step, RNG
state and the history so far). A restarted run resumes from
``ray.train.get_checkpoint()``. Rank 0 returns the history.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import numpy as np
import torch

from agd_ray.config import ExperimentConfig, TrainConfig
from agd_ray.data import load_data
from agd_ray.models import build_model, count_params
from agd_ray.optim import OPTIMIZERS, build_optimizer, build_scheduler, orthogonal_init_
from agd_ray.timeline import mark
from agd_ray.train.batches import GlobalBatchSampler, TimedShard
from agd_ray.train.checkpoint import CHECKPOINT_FILE, Checkpointer
from agd_ray.train.distributed import any_rank
from agd_ray.train.evaluate import evaluate
from agd_ray.train.session import Session, train_session
from agd_ray.train.step import Parts, loss_fn, setup_noise_scale, train_epoch
from agd_ray.train.wandb_logger import WandbLogger
from agd_ray.trial import TrialInfo

__all__ = ["CHECKPOINT_FILE", "run_training", "train_loop_config", "train_loop_per_worker"]

FINAL_METRICS = (
    *("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"),
    *("step", "samples", "wall_s"),
)


def batch_size_at(train: TrainConfig, epoch: int) -> int:
    """The global batch size in force at ``epoch``: ``train.batch_schedule``'s last
    entry at or before it (Smith et al. 2017), else ``train.batch_size``."""
    size = train.batch_size
    for start, batch in train.batch_schedule or ():
        if start <= epoch:
            size = batch
    return size


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_loop_config(cfg: ExperimentConfig, trial: TrialInfo) -> dict[str, Any]:
    """What ``train_loop_per_worker`` receives: the validated config and the trial,
    as they are (Ray pickles them to every worker; nothing is validated again)."""
    return {"experiment": cfg, "trial": trial}


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train entry point; ``config`` comes from ``train_loop_config`` (under
    Train's local mode, with the ``session`` to run in)."""
    session = config["session"]() if "session" in config else train_session()
    return run_training(config["experiment"], session, config["trial"])


def run_training(
    cfg: ExperimentConfig, session: Session, trial: TrialInfo
) -> dict[str, Any] | None:
    """Train ``cfg``: resume from the session's checkpoint, one report per epoch.

    Returns the history, status and parameter count on rank 0 (None elsewhere).
    """
    mark("loop: starts")
    rank, world, device = session.rank, session.world, session.device
    seed_everything(cfg.train.seed)
    splits = load_data(cfg.data, cfg.train.seed, cfg.model)
    train_data, val_data, test_data = splits.train, splits.val, splits.test
    if splits.streaming:  # Ray Data shards, each epoch's first batch timed

        def shard(split: str) -> TimedShard:
            timeout = cfg.scaling.first_batch_timeout_s
            return TimedShard(session.get_dataset_shard(split), split, timeout)

        train_data, test_data = shard("train"), shard("test")
        val_data = shard("val") if cfg.data.val_fraction > 0 else None
    mark("loop: data loaded")
    model = build_model(cfg.model, splits.spec)
    entry = OPTIMIZERS[cfg.optimizer.name]
    if entry.init == "orthogonal":
        orthogonal_init_(model)  # baselines keep PyTorch's default init, as in the paper
    params = count_params(model)
    model = session.prepare_model(model)
    optimizer = build_optimizer(cfg.optimizer, model)
    scheduler = build_scheduler(cfg.optimizer, optimizer, cfg.train.epochs)
    criterion = loss_fn(cfg.train.loss, splits.spec.num_classes)
    noise, local_norm = setup_noise_scale(cfg, model, session)
    logger = WandbLogger(cfg, trial.trial_id, rank, trial.storage, trial.wandb_dir)
    parts = Parts(model, optimizer, entry, criterion, device, logger, noise, local_norm)
    parts.precision = cfg.train.precision

    checkpointer = Checkpointer(session, model, optimizer, scheduler, noise)
    state = checkpointer.load()
    session.reported[:0] = state.history  # a resumed run's earlier epochs (a stopped one's)

    n_train = len(splits.train) if not splits.streaming else cfg.train.batch_size
    per_epoch = cfg.data.num_samples if cfg.data.is_text else None  # sequences per epoch
    sampler = GlobalBatchSampler(
        n_train, cfg.train.batch_size, rank, world, seed=cfg.train.seed, per_epoch=per_epoch
    )
    context = splits.spec.context  # text: tokens per sequence
    mark("loop: model and optimizer built")
    last_checkpoint = time.perf_counter()
    for epoch in range(state.epoch, cfg.train.epochs):
        start = time.perf_counter()
        sampler.set_epoch(epoch, batch_size_at(cfg.train, epoch))
        if entry.eval_mode:  # schedule-free: train at y, evaluate and save at x
            optimizer.train()
        row, steps, samples = train_epoch(cfg, parts, train_data, sampler, state.step)
        if scheduler is not None:
            scheduler.step()
        if entry.eval_mode:
            optimizer.eval()
        train_s = time.perf_counter() - start
        classes = splits.spec.num_classes
        for split, data in (("val", val_data), ("test", test_data)):
            if data is not None:
                row.update(evaluate(cfg, parts, data, session, classes, split))
        state.step += steps
        state.samples += samples
        state.wall_s += time.perf_counter() - start
        row = {
            "epoch": epoch,
            "step": state.step,
            "samples": state.samples,
            "batch_size": sampler.batch_size,
            **row,
            "wall_s": state.wall_s,
            "samples_per_s": samples / train_s,
        }
        if context is not None:  # a language model: tokens seen, and bits per token
            row.update(tokens=state.samples * context, tokens_per_s=samples * context / train_s)
            for split in ("val", "test"):
                loss = row.get(f"{split}_loss")
                row[f"{split}_bits"] = None if loss is None else loss / math.log(2)
        state.history.append(row)
        state.epoch = epoch + 1
        finite = row["diverged_step"] is None and all(
            math.isfinite(row[k]) for k in ("train_loss", "test_loss")
        )
        if not finite and row["diverged_step"] is None:
            row["diverged_step"] = state.step  # a non-finite test loss: this epoch's end
        done = not finite or state.epoch == cfg.train.epochs
        state.status = ("diverged" if not finite else "completed") if done else "running"
        due = (epoch + 1) % cfg.train.checkpoint_every == 0
        recent = time.perf_counter() - last_checkpoint < cfg.train.checkpoint_min_s
        # every rank decides alike: rank 0's clock would do, but all ranks must agree
        checkpoint = done or (due and not any_rank(recent, world, device))
        checkpoint = checkpoint or state.epoch in session.checkpoint_epochs
        if checkpoint:
            last_checkpoint = time.perf_counter()
        logger.log_epoch(state.step, row)
        checkpointer.report(row, state, params, save=checkpoint)
        mark(f"loop: epoch {epoch + 1} reported")
        if not finite:
            break
    final = state.history[-1] if state.history else {}
    logger.finish(state.status, {k: final.get(k) for k in FINAL_METRICS} | {"params": params})
    if rank != 0:
        return None
    return {"history": state.history, "status": state.status, "params": params}
