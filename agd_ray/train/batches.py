"""Global batches split over data-parallel workers.

Each epoch draws one permutation of the training set from (seed, epoch); step i's
global batch is the i-th block of ``batch_size`` indices and worker r takes the
r-th contiguous slice of it. Every worker takes the same number of steps, and the
all-reduced gradient equals the gradient of the whole global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from agd_ray.data.imagenet import normalise


class GlobalBatchSampler:
    """Yields this worker's slice of each global batch (a list of dataset indices).

    Used as a DataLoader ``batch_sampler``; call ``set_epoch`` before each epoch.
    The last incomplete global batch is dropped (unless the dataset is smaller
    than one batch, in which case the whole dataset is one batch).
    """

    def __init__(self, n: int, batch_size: int, rank: int, world: int, seed: int):
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is not divisible by {world} workers")
        self.n, self.batch_size, self.rank, self.world, self.seed = n, batch_size, rank, world, seed
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
        return max(1, self.n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        size = min(self.batch_size, self.n - self.n % self.world)
        local = size // self.world
        for i in range(len(self)):
            batch = perm[i * size : (i + 1) * size]
            yield batch[self.rank * local : (self.rank + 1) * local].tolist()


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
    if hasattr(dataset, "iter_torch_batches"):  # a Ray Data shard (imagenet)
        local = sampler.batch_size // sampler.world
        for batch in dataset.iter_torch_batches(
            batch_size=local,
            local_shuffle_buffer_size=4 * local,
            local_shuffle_seed=sampler.seed * 1_000_003 + sampler.epoch,
            device=device,
        ):
            yield normalise(batch["image"]), batch["label"]
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
            yield normalise(batch["image"]), batch["label"]
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
