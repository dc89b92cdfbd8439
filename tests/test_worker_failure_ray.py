"""A Train worker killed with SIGKILL mid-run is replaced (``scaling.max_failures``)
and training resumes from the last checkpoint: on CPU with a fixed seed the result
equals an uninterrupted run's exactly, and ``epochs.parquet`` holds each epoch once.

The kill comes from a Train callback on the controller (no test hook in the
product): after epoch ``KILL_AFTER`` is reported it SIGKILLs one worker process,
found in Ray's actor table. A worker cannot run more than two epochs ahead of the
controller (each worker's report queue holds one result), so with
``KILL_AFTER + 2 < EPOCHS`` the kill always lands before training ends.
"""

import os
import signal
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from ray import cloudpickle
from ray.train.v2.api.callback import UserCallback
from ray.util.queue import Queue

import agd_ray.train.trainer as trainer_module
from agd_ray.config import load_config
from agd_ray.train.loop import CHECKPOINT_FILE
from agd_ray.train.trainer import make_trainer, outcome_from_result, run_train

pytestmark = pytest.mark.ray

EPOCHS, KILL_AFTER = 5, 1
TIMING = {"wall_s", "samples_per_s"}  # the only columns a restart may change


def train_worker_pids() -> list[int]:
    """Process ids of this Ray cluster's live Train workers."""
    from ray._private import state

    alive = [a for a in state.actors().values() if a["State"] == "ALIVE"]
    return sorted(a["Pid"] for a in alive if a["ActorClassName"] == "RayTrainWorker")


class KillOneWorker(UserCallback):
    """Controller side: records the live workers' pids at each report, and SIGKILLs
    one worker (once) after epoch ``after`` is reported."""

    def __init__(self, after: int, queue: Queue):
        self.after, self.queue, self.killed = after, queue, False

    def after_report(self, run_context, metrics, checkpoint):
        pids = train_worker_pids()
        epoch = metrics[0]["epoch"]
        self.queue.put({"epoch": epoch, "pids": pids})
        if epoch == self.after and not self.killed:
            self.killed = True
            os.kill(pids[-1], signal.SIGKILL)
            self.queue.put({"killed": pids[-1]})


def final_weights(storage: Path) -> dict[str, torch.Tensor]:
    """The model in the last checkpoint of the run stored under ``storage``."""
    ckpts = [torch.load(p, weights_only=False) for p in storage.rglob(CHECKPOINT_FILE)]
    last = max(ckpts, key=lambda c: c["state"]["epoch"])
    assert last["state"]["epoch"] == EPOCHS
    return last["model"]


def without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def test_killed_worker_resumes_to_the_same_result(ray_session, tmp_path, monkeypatch):
    cfg = load_config(
        None,
        [
            "name=wf",
            "data.num_samples=2000",
            "train.batch_size=64",
            f"train.epochs={EPOCHS}",
            "train.checkpoint_min_s=0",
            "scaling.num_workers=2",
            "scaling.max_failures=1",
            "wandb.mode=disabled",
        ],
    )
    # The callback runs on the controller, which cannot import this test module.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    events = Queue()

    def with_kill(*args, **kwargs):
        trainer = make_trainer(*args, **kwargs)
        trainer.run_config.callbacks.append(KillOneWorker(KILL_AFTER, events))
        return trainer

    monkeypatch.setattr(trainer_module, "make_trainer", with_kill)
    killed = run_train(cfg, tmp_path / "killed", echo=lambda line: None)
    assert killed.status == "completed", killed.error
    monkeypatch.undo()
    # The uninterrupted reference runs afterwards, not alongside: the callback finds
    # the workers in Ray's actor table, which would then list both runs' workers.
    ref_storage = tmp_path / "reference"
    expected = outcome_from_result("wf", make_trainer(cfg, "reference", str(ref_storage)).fit())
    assert expected.status == "completed", expected.error

    # A worker was killed after epoch KILL_AFTER; Train replaced the worker group and
    # the new workers went on from a checkpoint (not from epoch 0).
    log = [events.get() for _ in range(events.qsize())]
    victim = next(e["killed"] for e in log if "killed" in e)
    reports = [e for e in log if "epoch" in e]
    before = next(e["pids"] for e in reports if e["epoch"] == KILL_AFTER)
    assert victim in before
    resumed = [e for e in reports if len(e["pids"]) == 2 and not set(e["pids"]) & set(before)]
    first = resumed[0]["epoch"]
    assert KILL_AFTER <= first and [e["epoch"] for e in resumed] == list(range(first, EPOCHS))

    # Each epoch once in epochs.parquet; the history (noise scale included) equals
    # the uninterrupted run's exactly, timings aside; the final weights are identical.
    epochs = pq.read_table(tmp_path / "killed/wf/epochs.parquet").column("epoch").to_pylist()
    assert epochs == list(range(EPOCHS))
    assert without_timings(killed.history) == without_timings(expected.history)
    assert all(row["noise_scale"] is not None for row in killed.history)
    weights, ref_weights = final_weights(tmp_path / "killed"), final_weights(ref_storage)
    assert weights.keys() == ref_weights.keys()
    assert all(torch.equal(weights[k], ref_weights[k]) for k in weights)
