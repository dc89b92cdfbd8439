"""Parquet token shards (``agd-ray data prepare-text --format parquet``), streamed
through Ray Data to the Train workers, as ImageNet's shards are.

    if has_parquet_shards(root):
        vocab = parquet_meta(root)["vocab_size"]       # on the driver, without Ray
        datasets = build_token_datasets(root, context=256, eval_sequences=512, seed=0)

Windows follow ``agd_ray.data.text``'s rule (context + 1 tokens every ``context``).
"""

from __future__ import annotations

from agd_ray.config import ConfigError
from agd_ray.data.imagenet import _fs_and_path, shard_paths
from agd_ray.data.text import SPLITS, parse_meta


def has_parquet_shards(root: str | None) -> bool:
    """Whether ``root`` (a folder or object-store URI) holds ``train/*.parquet``."""
    if not root:
        return False
    fs, path = _fs_and_path(root)
    return bool(shard_paths(fs, f"{path}/train"))


def parquet_meta(root: str | None) -> dict:
    """meta.json of Parquet shards (vocab_size, tokens per split...), read on the
    driver without Ray; a one-line ConfigError naming data.root if it is not there."""
    if not root:
        raise ConfigError("data.root", "token shards are read from data.root; set it")
    fs, path = _fs_and_path(root)
    try:
        with fs.open_input_stream(f"{path}/meta.json") as f:
            meta = parse_meta(f"{root}/meta.json", f.read())
    except (FileNotFoundError, OSError):
        raise ConfigError(
            "data.root", f"{root}: no meta.json (run agd-ray data prepare-text --format parquet)"
        ) from None
    if not isinstance(meta.get("vocab_size"), int) or not isinstance(meta.get("tokens"), dict):
        raise ConfigError(f"{root}/meta.json", "needs vocab_size (int) and tokens ({split: n})")
    if not shard_paths(fs, f"{path}/train"):
        raise ConfigError("data.root", f"{root}/train: no Parquet shards")
    return meta


def build_token_datasets(
    root: str, context: int, eval_sequences: int | None, seed: int
) -> dict[str, object]:
    """{"train", "val", "test"} Ray Datasets of int64 windows, columns ``x`` and
    ``y`` (n, context), for the splits that have shards.

    One read task per shard, fused with ``windows_of_blocks`` (which windows the whole
    shard: its ids concatenated, the last partial window dropped). Training takes
    the shards in a new order each epoch, drawn from ``seed``. With
    ``eval_sequences``, val and test keep that many windows, spread over their
    shards (every k-th window, k from meta.json's token counts) and in a fixed
    order, so each evaluation sees the same ones."""
    from ray.data import FileShuffleConfig

    meta = parquet_meta(root)
    fs, path = _fs_and_path(root)
    datasets = {}
    for split in SPLITS:
        paths = shard_paths(fs, f"{path}/{split}")
        if not paths:
            continue
        limit = None if split == "train" else eval_sequences
        stride = 1
        if limit is not None:
            stride = max(1, int(meta["tokens"].get(split, 0)) // context // max(1, limit))
        shuffle = FileShuffleConfig(seed=seed) if split == "train" else None
        ds = _read_shards(paths, fs, shuffle).map_batches(
            windows_of_blocks(context, stride),
            batch_size=None,  # whole read blocks: one shard each, fused with the read
            batch_format="pyarrow",
        )
        if limit is not None:
            ds = ds.limit(limit)
            ds.context.execution_options.preserve_order = True  # this dataset's own copy
        datasets[split] = ds
    return datasets


def windows_of_blocks(context: int, stride: int = 1):
    """The map_batches function: a block's ``ids`` rows concatenated and cut into
    windows by ``window_array``'s rule (every ``stride``-th kept), as ``x`` and ``y``.
    A closure, so that Ray ships it by value: read tasks then import numpy and
    pyarrow, not agd_ray (whose data package imports torch: seconds a worker)."""

    def cut(batch) -> dict:
        import numpy as np
        import pyarrow.compute as pc
        from numpy.lib.stride_tricks import sliding_window_view

        ids = pc.list_flatten(batch["ids"]).to_numpy()
        n = (len(ids) - 1) // context
        w = np.empty((0, context + 1), np.int64)
        if n >= 1:
            w = sliding_window_view(ids[: n * context + 1], context + 1)[::context][::stride]
        w = np.asarray(w, dtype=np.int64)
        return {"x": np.ascontiguousarray(w[:, :-1]), "y": np.ascontiguousarray(w[:, 1:])}

    return cut


def _read_shards(paths: list[str], fs, shuffle):
    """Through Ray Data's V1 Parquet reader, one block per shard (see
    ``agd_ray.data.imagenet._read_shards`` for why not the V2 reader)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    previous, ctx.use_datasource_v2 = ctx.use_datasource_v2, False
    try:
        return ray.data.read_parquet(
            paths, filesystem=fs, shuffle=shuffle, override_num_blocks=len(paths)
        ).select_columns(["ids"])
    finally:
        ctx.use_datasource_v2 = previous
