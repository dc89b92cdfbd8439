"""Datasets: MNIST-1D generated locally (the embedded default), and MNIST / CIFAR-10 /
CIFAR-100 read by torchvision from ``data.root``.

``prepare_data(cfg)`` runs on the driver before Ray starts: it builds and caches
MNIST-1D once and refuses a missing root. ``load_data(cfg)`` runs in each worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

from agd_ray.config import ConfigError, DataConfig
from agd_ray.data.mnist1d import load_mnist1d
from agd_ray.data.vision import VISION_SPECS, load_vision

__all__ = ["DataSpec", "Splits", "load_data", "prepare_data"]


@dataclass(frozen=True)
class DataSpec:
    name: str
    input_shape: tuple[int, ...]
    num_classes: int


@dataclass
class Splits:
    """In-memory/torchvision datasets, or (imagenet) None: the splits then stream
    through Ray Data (``agd_ray.data.imagenet.build_datasets``)."""

    spec: DataSpec
    train: Dataset | None
    test: Dataset | None

    @property
    def streaming(self) -> bool:
        return self.train is None


def load_data(cfg: DataConfig) -> Splits:
    if cfg.name == "mnist1d":
        train, test = load_mnist1d(cfg.num_samples, cfg.cache_dir)
        return Splits(DataSpec("mnist1d", (40,), 10), train, test)
    if cfg.name in VISION_SPECS:
        shape, classes = VISION_SPECS[cfg.name]
        train, test = load_vision(cfg.name, cfg.root, cfg.download)
        return Splits(DataSpec(cfg.name, shape, classes), train, test)
    if cfg.name == "imagenet":
        from agd_ray.data.imagenet import check_shards

        classes = check_shards(cfg)
        return Splits(
            DataSpec("imagenet", (3, cfg.image_size, cfg.image_size), classes), None, None
        )
    raise ConfigError("data.name", f"unknown dataset {cfg.name!r}")


def prepare_data(cfg: DataConfig) -> DataSpec:
    """Driver-side check and cache warm-up; raises ConfigError naming data.root."""
    return load_data(cfg).spec
