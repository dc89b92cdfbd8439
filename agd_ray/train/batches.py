"""Global batches split over data-parallel workers.

Each epoch draws one permutation of the training set from (seed, epoch); step i's
global batch is the i-th block of ``batch_size`` indices and worker r takes the
r-th contiguous slice of it. Every worker takes the same number of steps, and the
all-reduced gradient equals the gradient of the whole global batch.

Ray Data shards (imagenet) are wrapped in ``TimedShard``: an epoch whose first batch
does not come within ``scaling.first_batch_timeout_s`` fails, saying what the
pipeline waits for, instead of waiting forever for CPUs that never free up.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from agd_ray.data.imagenet import normalise


class GlobalBatchSampler:
    """Yields this worker's slice of each global batch (a list of dataset indices).

    Used as a DataLoader ``batch_sampler``; call ``set_epoch`` before each epoch.
    The last incomplete global batch is dropped (unless the dataset is smaller
    than one batch, in which case the whole dataset is one batch). With
    ``per_epoch``, an epoch is that many samples, drawn afresh from the permutation.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        rank: int,
        world: int,
        seed: int,
        per_epoch: int | None = None,
    ):
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is not divisible by {world} workers")
        self.n, self.batch_size, self.rank, self.world, self.seed = n, batch_size, rank, world, seed
        self.limit = per_epoch
        self.per_epoch = min(n, per_epoch or n)  # samples drawn per epoch (text: sequences)
        self.epoch = 0

    def set_epoch(self, epoch: int, batch_size: int | None = None) -> None:
        """Start ``epoch``, optionally with a new global batch size (batch-size ramps)."""
        self.epoch = epoch
        if batch_size is not None:
            if batch_size % self.world:
                raise ValueError(
                    f"batch size {batch_size} is not divisible by {self.world} workers"
                )
            self.batch_size = batch_size

    def __len__(self) -> int:
        return max(1, self.per_epoch // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        size = min(self.batch_size, self.per_epoch - self.per_epoch % self.world)
        local = size // self.world
        for i in range(len(self)):
            batch = perm[i * size : (i + 1) * size]
            yield batch[self.rank * local : (self.rank + 1) * local].tolist()


def inputs_and_targets(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of a Ray Data batch: images (normalised here) and labels, or token windows."""
    if "image" in batch:
        return normalise(batch["image"]), batch["label"]
    return batch["x"], batch["y"]


def shard_indices(n: int, rank: int, world: int) -> range:
    """A contiguous, non-overlapping 1/world share of ``range(n)`` (for evaluation)."""
    per = -(-n // world)
    return range(rank * per, min(n, (rank + 1) * per))


def train_batches(
    dataset: Dataset, sampler: GlobalBatchSampler, loader_workers: int, device=None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches for one epoch. In-memory tensors are indexed directly (no
    per-sample collate); Ray Data shards stream (Ray splits them over the workers);
    other datasets go through a DataLoader."""
    if hasattr(dataset, "iter_torch_batches"):  # a Ray Data shard (imagenet, tokens)
        local = sampler.batch_size // sampler.world
        steps = -(-sampler.limit // sampler.batch_size) if sampler.limit else None
        batches = dataset.iter_torch_batches(
            batch_size=local,
            local_shuffle_buffer_size=4 * local,
            local_shuffle_seed=sampler.seed * 1_000_003 + sampler.epoch,
            device=device,
        )
        for step, batch in enumerate(batches):
            if step == steps:  # an epoch of per_epoch samples: every rank stops alike
                break
            yield inputs_and_targets(batch)
        return
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors
        for idx in sampler:
            idx = torch.as_tensor(idx)
            yield x[idx], y[idx]
        return
    yield from DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=loader_workers,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )


def eval_batches(
    dataset: Dataset, rank: int, world: int, batch_size: int, loader_workers: int, device=None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This worker's share of ``dataset`` in order, for evaluation."""
    if hasattr(dataset, "iter_torch_batches"):  # Ray Data has split it already
        for batch in dataset.iter_torch_batches(batch_size=batch_size, device=device):
            yield inputs_and_targets(batch)
        return
    shard = shard_indices(len(dataset), rank, world)
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors
        for start in range(shard.start, shard.stop, batch_size):
            stop = min(start + batch_size, shard.stop)
            yield x[start:stop], y[start:stop]
        return
    subset = torch.utils.data.Subset(dataset, list(shard))
    yield from DataLoader(subset, batch_size=batch_size, num_workers=loader_workers)


class FirstBatchTimeout(TimeoutError):
    """A Ray Data pipeline gave no batch within ``scaling.first_batch_timeout_s``."""


def first_batch_within(
    batches: Iterable, timeout_s: float | None, what: str, waiting_for=lambda: "its tasks"
) -> Iterator:
    """``batches``, raising ``FirstBatchTimeout`` (which names ``what`` and what
    ``waiting_for()`` says it waits for) if the first takes longer than
    ``timeout_s``; ``None`` waits without end. The first batch is fetched on a
    helper thread; after a timeout that thread is left blocked, to go with the
    worker that the error ends."""
    batches = iter(batches)
    if timeout_s is None:
        yield from batches
        return
    first: queue.Queue = queue.Queue(maxsize=1)

    def fetch() -> None:
        try:
            first.put(("batch", next(batches)))
        except StopIteration:
            first.put(("end", None))
        except BaseException as err:  # raised again on the caller's thread
            first.put(("error", err))

    threading.Thread(target=fetch, name="first-batch", daemon=True).start()
    try:
        kind, item = first.get(timeout=timeout_s)
    except queue.Empty:
        raise FirstBatchTimeout(
            f"no batch of {what} from the Ray Data pipeline after {timeout_s:g} s "
            f"(waiting for {waiting_for()}); give the pipeline CPUs (lower "
            "scaling.cpus_per_worker or scaling.num_workers) or raise "
            "scaling.first_batch_timeout_s"
        ) from None
    if kind == "error":
        raise item
    if kind == "batch":
        yield item
        yield from batches


def pipeline_wait() -> str:
    """What a starved Ray Data pipeline waits for: a CPU for its read and decode
    tasks, with the cluster's free CPUs now."""
    from agd_ray.data.imagenet import DECODE_CPUS

    need = f"{DECODE_CPUS:g} free CPU for each read-and-decode task"
    try:
        import ray

        free = ray.available_resources().get("CPU", 0.0)
        total = ray.cluster_resources().get("CPU", 0.0)
    except Exception:  # no Ray to ask: say what is needed only
        return need
    return f"{need}; {free:g} of the cluster's {total:g} CPUs are free now"


class TimedShard:
    """A Ray Data shard (or dataset) whose ``iter_torch_batches`` fails with
    ``FirstBatchTimeout`` when an epoch's first batch takes longer than ``timeout_s``."""

    def __init__(self, shard: Any, split: str, timeout_s: float | None):
        self.shard, self.split, self.timeout_s = shard, split, timeout_s

    def iter_torch_batches(self, **kwargs) -> Iterator:
        batches = self.shard.iter_torch_batches(**kwargs)
        return first_batch_within(batches, self.timeout_s, f"the {self.split} split", pipeline_wait)
