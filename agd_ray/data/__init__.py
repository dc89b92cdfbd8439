"""Datasets: MNIST-1D generated locally (the embedded default), and MNIST / CIFAR-10 /
CIFAR-100 read by torchvision from ``data.root``, ImageNet streamed by Ray Data; text
for the GPT: pysrc (built locally) and tokens (``data.root``; ``agd_ray.data.text``).

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

from agd_ray.config import ConfigError, DataConfig, ModelConfig
from agd_ray.data.mnist1d import load_mnist1d
from agd_ray.data.vision import VISION_SPECS, load_vision

__all__ = ["DataSpec", "Splits", "load_data", "prepare_data", "streams"]


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know of its data. Text: ``num_classes`` is the vocabulary,
    ``context`` the sequence length, ``unit`` "byte" or "token", and ``fingerprint``
    identifies the corpus (recorded in the results' provenance)."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    context: int | None = None
    unit: str | None = None
    fingerprint: str | None = None


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
    """Whether the dataset streams through Ray Data (imagenet, Parquet token shards):
    its read and decode tasks then need CPUs that the Train workers leave free
    (``scaling.cpus_per_worker``)."""
    if cfg.name == "tokens" and cfg.root is not None:
        from agd_ray.data.text_stream import has_parquet_shards

        return has_parquet_shards(cfg.root)
    return cfg.name == "imagenet"


def ray_datasets(cfg: DataConfig, seed: int, context: int | None) -> dict:
    """The Ray Datasets of a streaming dataset ({"train", "val", "test"})."""
    if cfg.name == "tokens":
        from agd_ray.data.text_stream import build_token_datasets

        return build_token_datasets(cfg.root, context, cfg.eval_sequences, seed)
    from agd_ray.data.imagenet import build_datasets

    return build_datasets(cfg, seed)


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


def load_data(cfg: DataConfig, seed: int = 0, model: ModelConfig | None = None) -> Splits:
    """The three splits of ``cfg``'s dataset; the validation split depends on ``seed``.
    Text is cut to the ``model``'s context and checked against its vocabulary."""
    if cfg.is_text:
        context, vocab = (model.context, model.vocab) if model is not None else (None, None)
        return load_text(cfg, context, vocab)
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


def load_text(cfg: DataConfig, context: int | None, vocab: int | None = None) -> Splits:
    """Non-overlapping windows of ``context`` + 1 tokens of each split (val and test:
    ``data.eval_sequences`` of them, evenly spaced), or for Parquet shards only the
    spec (they stream through Ray Data). ``vocab``: the model's, checked against the
    data's ids."""
    from agd_ray.data import text, text_stream

    context = context or 128
    if cfg.name == "tokens" and text_stream.has_parquet_shards(cfg.root):
        meta = text_stream.parquet_meta(cfg.root)
        data_vocab = int(meta["vocab_size"])
        if vocab is not None and data_vocab > vocab:
            raise ConfigError("model.vocab", f"{vocab} is below the data's vocabulary {data_vocab}")
        unit, fingerprint = meta.get("unit", "token"), meta.get("fingerprint")
        spec = DataSpec("tokens", (context,), vocab or data_vocab, context, unit, fingerprint)
        return Splits(spec, None, None, None)
    if cfg.name == "pysrc":
        corpus = text.load_pysrc(cfg.cache_dir)
    else:
        corpus = text.load_token_bins(cfg.root, vocab)
    if vocab is not None and corpus.vocab > vocab:
        raise ConfigError("model.vocab", f"{vocab} is below the data's vocabulary {corpus.vocab}")
    limit = cfg.eval_sequences
    spec = DataSpec(
        cfg.name, (context,), vocab or corpus.vocab, context, corpus.unit, corpus.fingerprint
    )
    return Splits(
        spec,
        text.windows(corpus.train, context, split="train"),
        text.windows(corpus.val, context, limit, split="val") if corpus.val is not None else None,
        text.windows(corpus.test, context, limit, split="test"),
    )


def prepare_data(cfg: DataConfig, seed: int = 0, model: ModelConfig | None = None) -> DataSpec:
    """Driver-side check and cache warm-up; raises ConfigError naming data.root,
    data.val_fraction, or (text) model.context / model.vocab."""
    return load_data(cfg, seed, model).spec
