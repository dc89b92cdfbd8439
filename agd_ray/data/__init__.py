"""Datasets: MNIST-1D generated locally (the embedded default), and MNIST / CIFAR-10 /
CIFAR-100 read by torchvision from ``data.root``.

``prepare_data(cfg)`` runs on the driver before Ray starts: it builds and caches
MNIST-1D once and refuses a missing root. ``load_data(cfg, seed)`` runs in each
worker. Every dataset has three splits: train, a validation split held out of the
training data (``data.val_fraction``, drawn from the seed: baselines are tuned on
it) and test (what is reported).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from agd_ray.config import ConfigError, DataConfig
from agd_ray.data.mnist1d import load_mnist1d
from agd_ray.data.vision import VISION_SPECS, load_vision

__all__ = ["DataSpec", "Splits", "load_data", "prepare_data", "streams"]


@dataclass(frozen=True)
class DataSpec:
    name: str
    input_shape: tuple[int, ...]
    num_classes: int


@dataclass
class Splits:
    """In-memory/torchvision datasets, or (imagenet) None: the splits then stream
    through Ray Data (``agd_ray.data.imagenet.build_datasets``). ``val`` is None
    when ``data.val_fraction`` is 0."""

    spec: DataSpec
    train: Dataset | None
    val: Dataset | None
    test: Dataset | None

    @property
    def streaming(self) -> bool:
        return self.train is None


def streams(cfg: DataConfig) -> bool:
    """Whether the dataset streams through Ray Data (imagenet): its read and decode
    tasks then need CPUs that the Train workers leave free (``scaling.cpus_per_worker``)."""
    return cfg.name == "imagenet"


def holdout_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices of ``range(n)``: ``round(fraction * n)`` drawn for
    validation by a generator seeded from ``seed`` alone, both sorted."""
    n_val = round(fraction * n)
    if fraction > 0 and not 0 < n_val < n:
        raise ConfigError(
            "data.val_fraction", f"{fraction} of {n} training samples leaves an empty split"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def hold_out(train: Dataset, fraction: float, seed: int, val_view: Dataset | None = None):
    """(train, val) from one training set; ``val_view`` is the same samples seen
    without augmentation (torchvision), used for the validation split."""
    if fraction == 0:
        return train, None
    keep, val = holdout_indices(len(train), fraction, seed)
    if isinstance(train, TensorDataset):  # stay a TensorDataset: batches are slices
        return (
            TensorDataset(*(t[keep] for t in train.tensors)),
            TensorDataset(*(t[val] for t in train.tensors)),
        )
    return Subset(train, keep.tolist()), Subset(val_view or train, val.tolist())


def load_data(cfg: DataConfig, seed: int = 0) -> Splits:
    """The three splits of ``cfg``'s dataset; the validation split depends on ``seed``."""
    if cfg.name == "mnist1d":
        train, test = load_mnist1d(cfg.num_samples, cfg.cache_dir)
        train, val = hold_out(train, cfg.val_fraction, seed)
        return Splits(DataSpec("mnist1d", (40,), 10), train, val, test)
    if cfg.name in VISION_SPECS:
        shape, classes = VISION_SPECS[cfg.name]
        train, plain, test = load_vision(cfg.name, cfg.root, cfg.download)
        train, val = hold_out(train, cfg.val_fraction, seed, val_view=plain)
        return Splits(DataSpec(cfg.name, shape, classes), train, val, test)
    if cfg.name == "imagenet":
        from agd_ray.data.imagenet import check_shards

        classes = check_shards(cfg)
        spec = DataSpec("imagenet", (3, cfg.image_size, cfg.image_size), classes)
        return Splits(spec, None, None, None)
    raise ConfigError("data.name", f"unknown dataset {cfg.name!r}")


def prepare_data(cfg: DataConfig, seed: int = 0) -> DataSpec:
    """Driver-side check and cache warm-up; raises ConfigError naming data.root or
    data.val_fraction."""
    return load_data(cfg, seed).spec
