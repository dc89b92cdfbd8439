"""MNIST-1D generated locally, deterministic and cached; torchvision roots checked."""

import numpy as np
import pytest
import torch

from agd_ray.config import ConfigError, DataConfig
from agd_ray.data import load_data, prepare_data


def test_mnist1d_is_generated_cached_and_deterministic(tmp_path):
    cfg = DataConfig(num_samples=1000, cache_dir=str(tmp_path))
    a = load_data(cfg)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    assert a.spec.input_shape == (40,) and a.spec.num_classes == 10
    assert len(a.train) == 720 and len(a.val) == 80 and len(a.test) == 200  # val: 10 %
    x, y = a.train.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(y.tolist()) == set(range(10))

    mtime = files[0].stat().st_mtime_ns
    b = load_data(cfg)  # read back from the cache, not regenerated
    assert files[0].stat().st_mtime_ns == mtime
    assert torch.equal(b.train.tensors[0], x)

    other = tmp_path / "other"
    c = load_data(DataConfig(num_samples=1000, cache_dir=str(other)))  # regenerated
    assert np.array_equal(c.train.tensors[0].numpy(), x.numpy())


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_missing_root_is_an_error_naming_data_root(tmp_path, name):
    with pytest.raises(ConfigError, match=r"^data\.root: .*no such folder"):
        prepare_data(DataConfig(name=name, root=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match=rf"^data\.root: .*no {name} found"):
        prepare_data(DataConfig(name=name, root=str(tmp_path)))


def test_cifar_augmentation_is_crop_and_flip():
    from torchvision import transforms

    from agd_ray.data.vision import transforms_for

    train = transforms_for("cifar10", train=True).transforms
    assert isinstance(train[0], transforms.RandomCrop) and train[0].padding == 4
    assert isinstance(train[1], transforms.RandomHorizontalFlip)
    test = transforms_for("cifar10", train=False).transforms
    assert not any(isinstance(t, transforms.RandomCrop) for t in test)


def test_validation_split_is_held_out_of_train_and_drawn_from_the_seed(tmp_path):
    cfg = DataConfig(num_samples=1000, cache_dir=str(tmp_path), val_fraction=0.1)
    a, b, other = load_data(cfg, seed=0), load_data(cfg, seed=0), load_data(cfg, seed=1)
    assert len(a.train) == 720 and len(a.val) == 80 and len(a.test) == 200
    assert torch.equal(a.val.tensors[0], b.val.tensors[0])  # deterministic in the seed
    assert not torch.equal(a.val.tensors[0], other.val.tensors[0])
    # train and val partition the generated training set: no sample in both
    full = load_data(DataConfig(num_samples=1000, cache_dir=str(tmp_path), val_fraction=0))
    assert full.val is None and len(full.train) == 800
    rows = {tuple(r) for r in full.train.tensors[0].tolist()}
    train_rows = {tuple(r) for r in a.train.tensors[0].tolist()}
    val_rows = {tuple(r) for r in a.val.tensors[0].tolist()}
    assert not train_rows & val_rows and train_rows | val_rows == rows


def test_imagenet_holds_out_whole_shards_drawn_from_the_seed():
    from agd_ray.data.imagenet import split_train_shards

    paths = [f"train/{i:05d}.parquet" for i in range(20)]
    train, val = split_train_shards(paths, 0.1, seed=3)
    assert len(val) == 2 and sorted(train + val) == paths and not set(train) & set(val)
    assert split_train_shards(paths, 0.1, seed=3) == (train, val)
    assert split_train_shards(paths, 0.0, seed=3) == (paths, [])
    with pytest.raises(ConfigError, match=r"^data\.val_fraction: .*1;"):
        split_train_shards(paths[:1], 0.1, seed=0)
