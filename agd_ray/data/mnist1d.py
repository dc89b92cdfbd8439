"""MNIST-1D (Greydanus 2020), generated locally by the ``mnist1d`` package from its
templates (never downloaded), deterministic, and cached on disk so it is built once."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

GENERATOR_SEED = 42  # the benchmark's own seed (mnist1d's default)


def default_cache_dir() -> Path:
    base = os.environ.get("AGD_RAY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "agd-ray"
    )
    return Path(base)


def load_mnist1d(
    num_samples: int, cache_dir: str | None = None
) -> tuple[TensorDataset, TensorDataset]:
    """(train, test): 80 % / 20 % of ``num_samples``; x is (N, 40) float32, y int64."""
    path = Path(cache_dir or default_cache_dir()) / f"mnist1d_n{num_samples}_s{GENERATOR_SEED}.npz"
    if not path.exists():
        arrays = _generate(num_samples)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)  # atomic: concurrent workers never read a half-written file
    with np.load(path) as f:
        tensors = {k: torch.from_numpy(f[k]) for k in ("x", "y", "x_test", "y_test")}
    return (
        TensorDataset(tensors["x"], tensors["y"]),
        TensorDataset(tensors["x_test"], tensors["y_test"]),
    )


def _generate(num_samples: int) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = GENERATOR_SEED
    d = make_dataset(args)
    return {
        "x": d["x"].astype(np.float32),
        "y": d["y"].astype(np.int64),
        "x_test": d["x_test"].astype(np.float32),
        "y_test": d["y_test"].astype(np.int64),
    }
