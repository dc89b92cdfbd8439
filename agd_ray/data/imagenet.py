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
    """Number of classes; a clear error naming data.root if the shards are not there
    (or data.val_fraction if the training shards cannot be split)."""
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
        if not shard_paths(fs, f"{root}/{split}"):
            raise ConfigError("data.root", f"{cfg.root}/{split}: no Parquet shards")
    split_train_shards(shard_paths(fs, f"{root}/train"), cfg.val_fraction, seed=0)
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

    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    scale = 1.0 / (255 * std)
    bias = -torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1) / std
    # One float buffer, converted into and scaled in place: (x - 255m) / 255s as
    # x * scale + bias, without the temporaries of the plain expression (2-3x
    # faster on a CPU, where memory traffic dominates).
    out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
    return out.copy_(images).mul_(scale).add_(bias)


CHUNK = 64  # images per output block of the decode
DECODE_CPUS = 1
"""CPUs each read-and-decode task asks for: what the Train workers must leave free on
some node (``agd_ray.train.resources``), or the pipeline never starts."""


def decode_batch(batch: dict[str, np.ndarray], image_size: int, train: bool) -> dict:
    """JPEG bytes -> cropped (and flipped) uint8 (N, 3, S, S) images.

    Tasks rather than actors: each releases its CPU after its shard, so the train
    and validation pipelines never hold CPUs the other is waiting for."""
    import torch
    from torchvision.io import ImageReadMode, decode_image

    transform = transforms_for(image_size, train)
    labels = np.asarray(batch["label"], np.int64)
    images = np.empty((len(labels), 3, image_size, image_size), np.uint8)
    out = torch.from_numpy(images)  # crops are written in place: no stacking copy
    for i, data in enumerate(batch["image"]):
        jpeg = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        out[i] = transform(decode_image(jpeg, ImageReadMode.RGB))
    return {"image": images, "label": labels}


def decode_blocks(batch: dict[str, np.ndarray], image_size: int, train: bool):
    """map_batches generator over a whole read block (a shard, or part of a large
    one): decoded CHUNK images at a time, each chunk its own output block (the
    datasets' target block size is one chunk), so a consumer gets a shard's first
    images long before its last are decoded and a task holds one chunk of crops."""
    for start in range(0, len(batch["label"]), CHUNK):
        chunk = {key: column[start : start + CHUNK] for key, column in batch.items()}
        yield decode_batch(chunk, image_size, train)


def shard_paths(fs, folder: str) -> list[str]:
    """The Parquet shards in ``folder``, sorted by name."""
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    return sorted(i.path for i in infos if i.path.endswith(".parquet"))


def split_train_shards(paths: list[str], fraction: float, seed: int) -> tuple[list, list]:
    """(train, val) shards: whole shards held out for validation, drawn from ``seed``
    (at least one when ``fraction`` > 0, and at least one left to train on)."""
    if fraction == 0:
        return paths, []
    n_val = max(1, round(fraction * len(paths)))
    if n_val >= len(paths):
        raise ConfigError(
            "data.val_fraction",
            f"imagenet holds out whole training shards and there are {len(paths)}; "
            "prepare smaller shards (--shard-size) or set data.val_fraction: 0",
        )
    rng = np.random.default_rng(seed)
    val = set(rng.choice(len(paths), size=n_val, replace=False).tolist())
    return (
        [p for i, p in enumerate(paths) if i not in val],
        [p for i, p in enumerate(paths) if i in val],
    )


def _read_shards(paths: list[str], fs, shuffle: bool):
    """One read task per shard, fused with its decode (see build_datasets).

    Through Ray Data's V1 Parquet reader: the V2 reader (the default in Ray 2.60)
    lists every pass with a pool of footer-reading actors (seconds per epoch on a
    small machine) and bin-packs shards into read units of up to 128 MiB of JPEG
    bytes, which turns a small split into a single serial task and ignores
    ``override_num_blocks``."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    previous, ctx.use_datasource_v2 = ctx.use_datasource_v2, False
    try:
        return ray.data.read_parquet(
            paths,
            filesystem=fs,
            shuffle="files" if shuffle else None,
            # exactly one block per shard: more would split the blocks after the
            # read (SplitBlocks), which stops the read and the decode from fusing
            override_num_blocks=max(1, len(paths)),
        ).select_columns(["image", "label"])
    finally:
        ctx.use_datasource_v2 = previous


def build_datasets(cfg: DataConfig, seed: int = 0) -> dict:
    """{"train", "val", "test"} Ray Datasets, decoded lazily and streamed: "val" is
    the training shards held out by ``data.val_fraction`` (absent when it is 0),
    "test" the ILSVRC validation set (``val/`` of the shards).

    Each shard is read and decoded by one task (read_parquet -> map_batches fused):
    ``batch_size=None`` hands the decode whole read blocks, since a fixed batch
    size keeps Ray from fusing a map into the read before it; the decode then
    emits blocks of CHUNK images. Shards are taken in a random order per epoch for
    training (files shuffled: the read and the decode stay fused, unlike with
    randomize_block_order())."""
    fs, root = _fs_and_path(cfg.root)
    train, val = split_train_shards(shard_paths(fs, f"{root}/train"), cfg.val_fraction, seed)
    test = shard_paths(fs, f"{root}/val")
    splits = {"train": (train, True), "val": (val, False), "test": (test, False)}
    datasets = {}
    for split, (paths, train) in splits.items():
        if not paths:
            continue
        ds = _read_shards(paths, fs, shuffle=train).map_batches(
            decode_blocks,
            fn_kwargs={"image_size": cfg.image_size, "train": train},
            batch_size=None,
            batch_format="numpy",
            num_cpus=DECODE_CPUS,
        )
        # this dataset's own context (a copy): blocks of one chunk of uint8 crops
        ds.context.target_max_block_size = CHUNK * 3 * cfg.image_size**2
        datasets[split] = ds
    return datasets
