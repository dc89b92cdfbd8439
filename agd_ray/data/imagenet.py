"""ImageNet through Ray Data: the Parquet shards of ``prepare-imagenet`` are read with
``read_parquet`` and decoded and augmented by ``map_batches`` on the cluster's CPUs
(torchvision: RandomResizedCrop to ``data.image_size``, flip, normalise for
training; resize + centre crop for validation) while the GPUs train. Each Train
worker reads its shard with ``get_dataset_shard(...).iter_torch_batches(...)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from agd_ray.config import ConfigError, DataConfig

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _fs_and_path(root: str):
    import pyarrow.fs as pafs

    uri = root if "://" in root else str(Path(root).expanduser().resolve())
    return pafs.FileSystem.from_uri(uri)


def check_shards(cfg: DataConfig) -> int:
    """Number of classes; a clear error naming data.root if the shards are not there."""
    import pyarrow.fs as pafs

    if cfg.root is None:
        raise ConfigError("data.root", "imagenet is read from data.root (Parquet shards); set it")
    fs, root = _fs_and_path(cfg.root)
    try:
        with fs.open_input_stream(f"{root}/classes.json") as f:
            classes = json.loads(f.read())
    except (FileNotFoundError, OSError):
        raise ConfigError(
            "data.root", f"{cfg.root}: no classes.json (run agd-ray data prepare-imagenet)"
        ) from None
    for split in ("train", "val"):
        infos = fs.get_file_info(pafs.FileSelector(f"{root}/{split}", allow_not_found=True))
        if not any(i.path.endswith(".parquet") for i in infos):
            raise ConfigError("data.root", f"{cfg.root}/{split}: no Parquet shards")
    return len(classes)


def transforms_for(image_size: int, train: bool, normalise: bool = False):
    """Crop (and flip) uint8 images; with ``normalise``, also to normalised float32."""
    import torch
    from torchvision.transforms import v2

    if train:
        steps = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        steps = [v2.Resize(int(image_size * 8 / 7), antialias=True), v2.CenterCrop(image_size)]
    if normalise:
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
    return v2.Compose(steps)


def normalise(images):
    """uint8 (N, 3, S, S) -> normalised float32, on whatever device the batch is on
    (the GPU in training): the pipeline ships uint8, a quarter of the bytes."""
    import torch

    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1) * 255
    return (images.float() - mean) / std


def decode_batch(batch: dict[str, np.ndarray], image_size: int, train: bool) -> dict:
    """map_batches task: JPEG bytes -> cropped (and flipped) uint8 (N, 3, S, S) images.

    Tasks rather than actors: each releases its CPU after the batch, so the train
    and validation pipelines never hold CPUs the other is waiting for."""
    import torch
    from torchvision.io import ImageReadMode, decode_image

    transform = transforms_for(image_size, train)
    images = [
        transform(
            decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)
        )
        for data in batch["image"]
    ]
    return {"image": torch.stack(images).numpy(), "label": np.asarray(batch["label"], np.int64)}


def build_datasets(cfg: DataConfig) -> dict:
    """{"train": ..., "val": ...} Ray Datasets, decoded lazily and streamed."""
    import ray.data

    fs, root = _fs_and_path(cfg.root)
    datasets = {}
    for split, train in (("train", True), ("val", False)):
        # Files in random order per epoch, not randomize_block_order(): that keeps the
        # read and the decode fused into one task per block.
        ds = ray.data.read_parquet(
            f"{root}/{split}", filesystem=fs, shuffle="files" if train else None
        ).select_columns(["image", "label"])
        datasets[split] = ds.map_batches(
            decode_batch,
            fn_kwargs={"image_size": cfg.image_size, "train": train},
            batch_size=64,
            batch_format="numpy",
        )
    return datasets
