"""The per-worker training loop that Ray Train's ``TorchTrainer`` runs on every worker.

    TorchTrainer(train_loop_per_worker, train_loop_config=train_loop_config(cfg, trial), ...)

Per epoch: one pass over this worker's slices of the global batches, an evaluation
of the test split (each worker a shard; sums all-reduced), and one
``ray.train.report`` carrying a checkpoint (model, optimizer, epoch, step, RNG
state and the history so far). A restarted run resumes from
``ray.train.get_checkpoint()``. Rank 0 returns the history.
"""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from agd_ray.config import ExperimentConfig, TrainConfig, validate_config
from agd_ray.data import load_data
from agd_ray.models import build_model, count_params
from agd_ray.optim import OPTIMIZERS, Entry, build_optimizer, build_scheduler, orthogonal_init_
from agd_ray.train.batches import GlobalBatchSampler, eval_batches, train_batches
from agd_ray.train.noise import LocalGradNorm, NoiseScale, grad_sq_norm, local_norm_hook
from agd_ray.train.wandb_logger import WandbLogger

CHECKPOINT_FILE = "state.pt"
FINAL_METRICS = (
    *("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"),
    *("step", "samples", "wall_s"),
)


@dataclass
class TrainState:
    """What a resumed run needs besides the model and optimizer."""

    epoch: int = 0  # the next epoch to run
    step: int = 0
    samples: int = 0
    wall_s: float = 0.0
    status: str = "running"
    history: list[dict[str, Any]] = field(default_factory=list)


def _quiet_train_reports() -> None:
    """Ray Train logs every report at INFO under a logger named by its file path,
    which ``LoggingConfig`` does not reach; one line per epoch is ours to print."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


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


def loss_fn(kind: str, num_classes: int):
    """Square loss against one-hot targets scaled by sqrt(num_classes), or cross-entropy."""
    if kind == "xent":
        return F.cross_entropy
    target_scale = math.sqrt(num_classes)

    def square_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # F.mse_loss's backward cannot be differentiated forward-mode (the curvature
        # step's H d); this is the same mean of squares.
        target = F.one_hot(y, num_classes).to(out.dtype) * target_scale
        return (out - target).square().mean()

    return square_loss


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


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
    outcome, so only checkpoints are reported (each report is a driver round trip)."""


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


def tune_session(cfg: ExperimentConfig) -> Session:
    """In-process inside a Tune trial: one worker, reports and checkpoints go to Tune;
    streaming datasets are built here and read whole."""
    import ray.train._internal.storage as tune_storage
    import ray.tune

    # Tune logs every persisted checkpoint at INFO; the driver prints a line per trial.
    logging.getLogger(tune_storage.__name__).setLevel(logging.WARNING)
    device = torch.device("cuda" if cfg.scaling.use_gpu and torch.cuda.is_available() else "cpu")
    datasets = None
    if cfg.data.name == "imagenet":
        from agd_ray.data.imagenet import build_datasets

        datasets = build_datasets(cfg.data, cfg.train.seed)
    return Session(
        rank=0,
        world=1,
        device=device,
        prepare_model=lambda m: m.to(device),
        get_checkpoint=ray.tune.get_checkpoint,
        report=ray.tune.report,
        checkpoint_class=ray.tune.Checkpoint,
        get_dataset_shard=datasets.__getitem__ if datasets else None,
        report_every_epoch=False,
    )


@dataclass(frozen=True)
class TrialInfo:
    """Who this run is: its trial id, the sweep's storage (for a stable W&B run id)
    and where offline W&B runs go."""

    trial_id: str
    storage: str = ""
    wandb_dir: str | None = None


def train_loop_config(cfg: ExperimentConfig, trial: TrialInfo) -> dict[str, Any]:
    """What ``train_loop_per_worker`` receives (plain data, sent to every worker)."""
    return {"experiment": cfg.model_dump(mode="json"), "trial": asdict(trial)}


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train entry point; ``config`` comes from ``train_loop_config``."""
    cfg = validate_config(config["experiment"])
    return run_training(cfg, train_session(), TrialInfo(**config["trial"]))


def run_training(
    cfg: ExperimentConfig, session: Session, trial: TrialInfo
) -> dict[str, Any] | None:
    """Train ``cfg``: resume from the session's checkpoint, one report per epoch.

    Returns the history, status and parameter count on rank 0 (None elsewhere).
    """
    rank, world, device = session.rank, session.world, session.device
    seed_everything(cfg.train.seed)
    splits = load_data(cfg.data, cfg.train.seed)
    train_data, val_data, test_data = splits.train, splits.val, splits.test
    if splits.streaming:
        shard = session.get_dataset_shard
        train_data, test_data = shard("train"), shard("test")
        val_data = shard("val") if cfg.data.val_fraction > 0 else None
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

    state = TrainState()
    checkpoint = session.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            path = os.path.join(d, CHECKPOINT_FILE)
            state = load_checkpoint(path, model, optimizer, scheduler, noise, rank)

    n_train = len(splits.train) if not splits.streaming else cfg.train.batch_size
    sampler = GlobalBatchSampler(n_train, cfg.train.batch_size, rank, world, seed=cfg.train.seed)
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
        checkpoint = done or (due and not _any_rank(recent, session))
        if checkpoint:
            last_checkpoint = time.perf_counter()
        logger.log_epoch(state.step, row)
        report(session, row, state, params, model, optimizer, scheduler, checkpoint, noise)
        if not finite:
            break
    final = state.history[-1] if state.history else {}
    logger.finish(state.status, {k: final.get(k) for k in FINAL_METRICS} | {"params": params})
    if rank != 0:
        return None
    return {"history": state.history, "status": state.status, "params": params}


@dataclass
class Parts:
    """What one training step needs, built once per run."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    entry: Entry  # the registry's: how to step it, what it reports, train/eval modes
    criterion: Callable
    device: torch.device
    logger: WandbLogger
    noise: NoiseScale | None = None
    local_norm: LocalGradNorm | None = None  # DDP hook: local |g|^2 (world > 1)

    @property
    def micro_batches(self) -> bool:
        """One worker measuring the noise scale: two micro-batches per step."""
        return self.noise is not None and self.local_norm is None


def setup_noise_scale(cfg: ExperimentConfig, model: nn.Module, session: Session):
    """(NoiseScale, LocalGradNorm hook or None), or (None, None) when not measured."""
    if not cfg.train.noise_scale:
        return None, None
    if session.world > 1 and hasattr(model, "register_comm_hook"):
        hook = LocalGradNorm(session.device)
        model.register_comm_hook(hook, local_norm_hook)
        return NoiseScale(), hook
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return None, None  # micro-batches would change the BatchNorm statistics
    return NoiseScale(), None


def train_step(parts: Parts, x: torch.Tensor, y: torch.Tensor, measure: bool = True):
    """Forward, backward (measuring the noise scale on the way, with one worker only
    when ``measure``), optimizer step. Returns (loss, output), both on the device."""
    model, criterion = parts.model, parts.criterion
    params = [p for g in parts.optimizer.param_groups for p in g["params"]]
    parts.optimizer.zero_grad(set_to_none=True)
    half = len(y) // 2
    if measure and parts.micro_batches and half > 0 and len(y) % 2 == 0:
        out1 = model(x[:half])
        loss1 = criterion(out1, y[:half])
        loss1.backward()
        first = [None if p.grad is None else p.grad.clone() for p in params]
        sq1 = grad_sq_norm(params)
        parts.optimizer.zero_grad(set_to_none=True)
        out2 = model(x[half:])
        loss2 = criterion(out2, y[half:])
        loss2.backward()
        sq2 = grad_sq_norm(params)
        for p, g in zip(params, first, strict=True):  # the whole batch's mean gradient
            if g is not None:
                p.grad = g.mul_(0.5) if p.grad is None else p.grad.add_(g).mul_(0.5)
        parts.noise.update((sq1 + sq2) / 2, grad_sq_norm(params), half, len(y))
        loss, out = (loss1.detach() + loss2.detach()) / 2, torch.cat([out1, out2])
    else:
        out = model(x)
        loss = criterion(out, y)
        loss.backward()
        if parts.local_norm is not None:
            world = dist.get_world_size()
            local = len(y)
            parts.noise.update(parts.local_norm.take(), grad_sq_norm(params), local, local * world)
    if parts.entry.step_needs_loss:
        parts.optimizer.step(loss_fn=batch_loss_fn(parts, x, y))
    else:
        parts.optimizer.step()
    return loss.detach(), out.detach()


def batch_loss_fn(parts: Parts, x: torch.Tensor, y: torch.Tensor):
    """The batch loss as a function of the optimizer's parameter tensors (in order),
    for the curvature step's H d. Buffers are copies: BatchNorm's running statistics
    are not updated a second time."""
    net = unwrap(parts.model)
    names = {id(p): n for n, p in net.named_parameters()}
    order = [names[id(p)] for g in parts.optimizer.param_groups for p in g["params"]]
    buffers = {n: b.clone() for n, b in net.named_buffers()}

    def loss_of(params):
        state = {**buffers, **dict(zip(order, params, strict=True))}
        return parts.criterion(torch.func.functional_call(net, state, (x,)), y)

    return loss_of


DIVERGENCE_CHECK_EVERY = 50
"""Steps between the (all-ranks) checks for a non-finite loss inside an epoch: a
diverged run stops within this many steps, at one host sync per check."""


def train_epoch(
    cfg: ExperimentConfig, parts: Parts, dataset, sampler: GlobalBatchSampler, step0: int
) -> tuple[dict[str, Any], int, int]:
    """One pass -> (metrics, steps, samples). Metrics accumulate on the device and are
    read once at the end (no host sync per step, except when logging to W&B).

    A non-finite loss, or non-finite weights at the end, ends the epoch early; the
    row's ``diverged_step`` is then the global step at which it was first seen."""
    parts.model.train()
    device = parts.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    never = torch.iinfo(torch.int64).max
    first_bad = torch.full((), never, device=device, dtype=torch.int64)  # global step
    etas: list[torch.Tensor] = []
    has_eta = "eta" in parts.entry.metrics  # AGD and its variants: eta per epoch
    steps = 0
    for x, y in train_batches(dataset, sampler, cfg.data.loader_workers, device):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        measure = (step0 + steps) % cfg.train.noise_scale_every == 0
        loss, out = train_step(parts, x, y, measure)
        steps += 1
        first_bad = torch.where(torch.isfinite(loss), first_bad, first_bad.clamp_max(step0 + steps))
        loss_sum += loss * len(y)
        correct += (out.argmax(1) == y).sum()
        count += len(y)
        if has_eta:
            etas.append(parts.optimizer.eta.clone())  # step() overwrites it in place
        if parts.logger.active and (step0 + steps) % parts.logger.every == 0:
            metrics = {"train/loss": float(loss)}
            for name in parts.entry.metrics:  # 0-dim tensors the step wrote
                metrics[f"train/{name}"] = float(getattr(parts.optimizer, name))
            parts.logger.log_step(step0 + steps, metrics)
        if steps % DIVERGENCE_CHECK_EVERY == 0 and _first_on_any_rank(first_bad) != never:
            break  # every rank sees the same minimum and stops at the same step
    weights_finite = torch.stack(
        [torch.isfinite(p).all() for g in parts.optimizer.param_groups for p in g["params"]]
    ).all()
    first_bad = torch.where(weights_finite, first_bad, first_bad.clamp_max(step0 + steps))
    first_bad = _first_on_any_rank(first_bad)
    totals = all_reduce_sum(torch.stack([loss_sum, correct, count])).tolist()
    row: dict[str, Any] = {
        "train_loss": totals[0] / totals[2] if totals[2] else float("nan"),
        "train_acc": totals[1] / totals[2] if totals[2] else float("nan"),
        "diverged_step": None if first_bad == never else first_bad,
    }
    if etas:
        eta = torch.stack(etas).float()
        row.update(eta_mean=eta.mean().item(), eta_min=eta.min().item(), eta_max=eta.max().item())
    else:
        row.update(eta_mean=None, eta_min=None, eta_max=None)
    row["noise_scale"] = parts.noise.value() if parts.noise is not None else None
    return row, steps, int(totals[2])


def _first_on_any_rank(step: torch.Tensor) -> int:
    """The smallest of every rank's ``step`` (a host sync; an all-reduce when distributed)."""
    if dist.is_available() and dist.is_initialized():
        step = step.clone()
        dist.all_reduce(step, op=dist.ReduceOp.MIN)
    return int(step)


@torch.no_grad()
def evaluate(
    cfg: ExperimentConfig, parts: Parts, dataset, session: Session, num_classes: int, split: str
) -> dict[str, float]:
    """``{split}_loss`` and ``{split}_acc`` over the whole split (each worker one shard;
    sums all-reduced); for the test split also top-5 (None with fewer than 5 classes)."""
    device, rank, world = session.device, session.rank, session.world
    net = unwrap(parts.model)  # no DDP forward: shards may differ in size
    net.eval()
    sums = torch.zeros(4, device=device, dtype=torch.float64)
    batches = eval_batches(
        dataset, rank, world, cfg.train.eval_batch_size, cfg.data.loader_workers, device
    )
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = net(x)
        sums[0] += parts.criterion(out, y) * len(y)
        sums[1] += (out.argmax(1) == y).sum()
        if num_classes >= 5:
            sums[2] += (out.topk(5, dim=1).indices == y[:, None]).any(1).sum()
        sums[3] += len(y)
    loss, correct, correct5, n = all_reduce_sum(sums).tolist()
    if n == 0:  # Ray Data's equal split gives no rows to anyone from a split < world
        warnings.warn(f"the {split} split reached no worker: no {split} metrics", stacklevel=2)
        return {f"{split}_loss": None, f"{split}_acc": None}
    metrics = {f"{split}_loss": loss / n, f"{split}_acc": correct / n}
    if split == "test":
        metrics["test_acc5"] = correct5 / n if num_classes >= 5 else None
    return metrics


def _any_rank(flag: bool, session: Session) -> bool:
    """True if ``flag`` holds on any rank (so that all ranks take the same branch)."""
    if session.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=session.device)
    return bool(all_reduce_sum(t).item() > 0)


def report(
    session: Session,
    row,
    state: TrainState,
    params,
    model,
    optimizer,
    scheduler,
    checkpoint,
    noise: NoiseScale | None = None,
):
    """Report the epoch on every rank (a barrier under Train); when a checkpoint is
    due, rank 0 gathers every rank's ``worker_state`` and attaches the checkpoint.
    In-process under Tune, only checkpoints are reported."""
    if not checkpoint and not session.report_every_epoch:
        return
    metrics = {**row, "status": state.status, "params": params}
    workers = gather_to_rank0(worker_state(noise), session) if checkpoint else None
    if session.rank != 0 or not checkpoint:
        session.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, CHECKPOINT_FILE)
        save_checkpoint(path, state, model, optimizer, scheduler, workers)
        session.report(metrics, checkpoint=session.checkpoint_class.from_directory(d))


def worker_state(noise: NoiseScale | None = None) -> dict[str, Any]:
    """What this worker carries from epoch to epoch outside the model and optimizer:
    its RNG streams and its noise-scale averages. The data order needs nothing: it is
    drawn from (seed, epoch) afresh each epoch (``GlobalBatchSampler``)."""
    return {
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
        "noise": noise.state_dict() if noise is not None else None,
    }


def gather_to_rank0(obj: Any, session: Session) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0 (in rank order), None elsewhere; all ranks call it."""
    if session.world == 1:
        return [obj]
    gathered = [None] * session.world if session.rank == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def save_checkpoint(
    path: str,
    state: TrainState,
    model,
    optimizer,
    scheduler=None,
    workers: list[dict[str, Any]] | None = None,
) -> None:
    """Model, optimizer, scheduler, ``state`` and each rank's ``worker_state``
    (``workers[rank]``; by default this process's alone)."""
    torch.save(
        {
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "state": asdict(state),
            "workers": workers or [worker_state()],
        },
        path,
    )


def load_checkpoint(
    path: str, model, optimizer, scheduler=None, noise: NoiseScale | None = None, rank: int = 0
) -> TrainState:
    """Restore a checkpoint into built objects, with rank ``rank``'s RNG streams and
    noise-scale averages (rank 0's if the checkpoint has fewer workers)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    unwrap(model).load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    workers = ckpt.get("workers") or [{"rng": ckpt["rng"], "noise": None}]  # pre-0.2 files
    mine = workers[rank] if rank < len(workers) else workers[0]
    if noise is not None and mine["noise"] is not None:
        noise.load_state_dict(mine["noise"], next(unwrap(model).parameters()).device)
    rng = mine["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return TrainState(**ckpt["state"])
