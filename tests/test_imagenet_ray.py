"""Ray integration: one epoch of ResNet-50 on 64-pixel images with 2 workers, the
shards streamed through Ray Data; every good image is seen once."""

import pyarrow.parquet as pq
import pytest
from test_imagenet_prepare import WNIDS, make_tree

from agd_ray.config import ConfigError, load_config
from agd_ray.data import prepare_data
from agd_ray.data.imagenet import _fs_and_path, shard_paths, split_train_shards
from agd_ray.data.imagenet_prepare import prepare_imagenet
from agd_ray.train.trainer import make_trainer, outcome_from_result

pytestmark = pytest.mark.ray


def test_resnet50_epoch_through_ray_data(ray_session, tmp_path):
    src, shards = tmp_path / "ilsvrc", tmp_path / "shards"
    make_tree(src, per_class=8)  # 24 good train images, 6 val, one corrupt, one text file
    manifest = prepare_imagenet(str(src), str(shards), shard_size=5, workers=1, echo=lambda s: None)
    assert manifest["images"] == {"train": 24, "val": 6}

    cfg = load_config(
        None,
        [
            "data.name=imagenet",
            f"data.root={shards}",
            "data.image_size=64",
            "data.loader_workers=1",
            "model.arch=resnet50",
            "train.loss=xent",
            "train.epochs=1",
            "train.batch_size=4",
            "scaling.num_workers=2",
            "data.val_fraction=0.3",
        ],
    )
    assert prepare_data(cfg.data).num_classes == len(WNIDS)
    outcome = outcome_from_result("imagenet", make_trainer(cfg, "imagenet", str(tmp_path)).fit())
    assert outcome.status == "completed", outcome.error
    (epoch,) = outcome.history
    # the validation split is whole training shards, drawn from the seed
    fs, root = _fs_and_path(str(shards))
    train, val = split_train_shards(shard_paths(fs, f"{root}/train"), 0.3, seed=0)
    held_out = sum(pq.read_metadata(p).num_rows for p in val)
    assert len(val) == 2 and held_out >= 2
    # every other good training image once, split equally over the two workers
    # (Ray Train's split drops an odd one), in local batches of 2
    per_worker = (24 - held_out) // 2
    assert epoch["samples"] == 2 * per_worker
    assert epoch["step"] == -(-per_worker // 2)
    # 6 test and held_out validation images, split equally over the 2 workers (Ray
    # Train's split drops the odd one): accuracies are multiples of 1/n
    n_val = held_out // 2 * 2
    assert round(epoch["test_acc"] * 6, 6).is_integer() and epoch["test_acc5"] is None
    assert round(epoch["val_acc"] * n_val, 6).is_integer() and epoch["val_loss"] > 0
    assert epoch["eta_mean"] > 0


def test_missing_shards_are_refused(tmp_path):
    cfg = load_config(None, ["data.name=imagenet", f"data.root={tmp_path}", "model.arch=resnet50"])
    with pytest.raises(ConfigError, match=r"^data\.root: .*no classes\.json"):
        prepare_data(cfg.data)
    (tmp_path / "classes.json").write_text("[]")
    with pytest.raises(ConfigError, match=r"^data\.root: .*train: no Parquet shards"):
        prepare_data(cfg.data)
