"""Ray integration: one epoch of ResNet-50 on 64-pixel images with 2 workers, the
shards streamed through Ray Data; every good image is seen once."""

import pytest
from test_imagenet_prepare import WNIDS, make_tree

from agd_ray.config import ConfigError, load_config
from agd_ray.data import prepare_data
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
        ],
    )
    assert prepare_data(cfg.data).num_classes == len(WNIDS)
    outcome = outcome_from_result("imagenet", make_trainer(cfg, "imagenet", str(tmp_path)).fit())
    assert outcome.status == "completed", outcome.error
    (epoch,) = outcome.history
    assert epoch["samples"] == 24  # every good training image once, over both workers
    assert epoch["step"] == 24 // 4
    assert 0.0 <= epoch["test_acc"] <= 1.0 and epoch["test_acc5"] is None  # 3 classes
    assert epoch["eta_mean"] > 0


def test_missing_shards_are_refused(tmp_path):
    cfg = load_config(None, ["data.name=imagenet", f"data.root={tmp_path}", "model.arch=resnet50"])
    with pytest.raises(ConfigError, match=r"^data\.root: .*no classes\.json"):
        prepare_data(cfg.data)
    (tmp_path / "classes.json").write_text("[]")
    with pytest.raises(ConfigError, match=r"^data\.root: .*train: no Parquet shards"):
        prepare_data(cfg.data)
