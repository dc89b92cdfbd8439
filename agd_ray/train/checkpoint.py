"""Checkpoints: what a restarted run needs to continue exactly where it stopped.

A checkpoint holds the model, optimizer, scheduler, the loop's ``TrainState``
(epoch, step, samples, history) and each rank's ``worker_state`` (RNG streams and
noise-scale averages). The data order needs nothing: it is drawn from (seed, epoch).
"""

from __future__ import annotations

import os
import random
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from agd_ray.train.distributed import gather_to_rank0, unwrap
from agd_ray.train.noise import NoiseScale
from agd_ray.train.session import Session

CHECKPOINT_FILE = "state.pt"


@dataclass
class TrainState:
    """What a resumed run needs besides the model and optimizer."""

    epoch: int = 0  # the next epoch to run
    step: int = 0
    samples: int = 0
    wall_s: float = 0.0
    status: str = "running"
    history: list[dict[str, Any]] = field(default_factory=list)


class Checkpointer:
    """The run's state that a restart resumes: model, optimizer, scheduler, the
    loop's ``TrainState`` and every rank's RNG streams and noise-scale averages."""

    def __init__(self, session: Session, model, optimizer, scheduler=None, noise=None):
        self.session, self.model, self.optimizer = session, model, optimizer
        self.scheduler, self.noise = scheduler, noise

    def load(self) -> TrainState:
        """The session's checkpoint restored into the built objects, or a new state."""
        checkpoint = self.session.get_checkpoint()
        if checkpoint is None:
            return TrainState()
        with checkpoint.as_directory() as d:
            path = os.path.join(d, CHECKPOINT_FILE)
            return load_checkpoint(
                path, self.model, self.optimizer, self.scheduler, self.noise, self.session.rank
            )

    def report(self, row: dict[str, Any], state: TrainState, params: int, save: bool) -> None:
        """Report the epoch on every rank (a barrier under Train); with ``save``, rank 0
        gathers every rank's ``worker_state`` and attaches the checkpoint. In-process
        under Tune, only checkpoints are reported."""
        session = self.session
        if not save and not session.report_every_epoch:
            return
        metrics = {**row, "status": state.status, "params": params}
        workers = (
            gather_to_rank0(worker_state(self.noise), session.rank, session.world) if save else None
        )
        if session.rank != 0 or not save:
            session.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, CHECKPOINT_FILE)
            save_checkpoint(path, state, self.model, self.optimizer, self.scheduler, workers)
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
