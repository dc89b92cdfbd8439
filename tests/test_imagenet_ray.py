"""Ray integration, on a Ray of 2 CPUs like this machine's: one epoch of ResNet-50 on
64-pixel images with 2 workers, the shards streamed through Ray Data; every good
image is seen once. The workers' default half CPU each leaves the pipeline one;
workers that would take both are refused, and a pipeline that gets no CPU stops its
run after scaling.first_batch_timeout_s, saying so."""

import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from test_imagenet_prepare import WNIDS, make_tree

from agd_ray.config import ConfigError, load_config
from agd_ray.data import prepare_data
from agd_ray.data.imagenet import _fs_and_path, shard_paths, split_train_shards
from agd_ray.data.imagenet_prepare import prepare_imagenet
from agd_ray.train.resources import check_resources
from agd_ray.train.trainer import make_trainer, outcome_from_result

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_2cpus():
    """A local Ray of 2 CPUs (conftest's recipe, the CPUs of this machine)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("imagenet")
    src, shards = tmp / "ilsvrc", tmp / "shards"
    make_tree(src, per_class=8)  # 24 good train images, 6 val, one corrupt, one text file
    manifest = prepare_imagenet(str(src), str(shards), shard_size=5, workers=1, echo=lambda s: None)
    assert manifest["images"] == {"train": 24, "val": 6}
    return shards


def _config(shards, *overrides):
    return load_config(
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
            *overrides,
        ],
    )


def test_resnet50_epoch_through_ray_data_on_2_cpus(ray_2cpus, shards, tmp_path):
    cfg = _config(shards)
    assert ray_2cpus.cluster_resources()["CPU"] == 2
    check_resources([cfg])  # 2 workers x 0.5 CPU: one CPU left for the pipeline
    assert prepare_data(cfg.data).num_classes == len(WNIDS)
    trainer = make_trainer(cfg, "imagenet", str(tmp_path))
    assert trainer.scaling_config.resources_per_worker == {"CPU": 0.5}
    outcome = outcome_from_result("imagenet", trainer.fit())
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


def test_workers_that_take_every_cpu_are_refused(ray_2cpus, shards):
    cfg = _config(shards, "scaling.cpus_per_worker=1")
    with pytest.raises(ConfigError) as info:
        check_resources([cfg])
    assert str(info.value).startswith(
        "scaling.cpus_per_worker: 2 workers x 1 CPU leave the Ray Data pipeline no CPU"
    )


STARVED = """
import os, sys
import ray
from ray.util.placement_group import placement_group
from agd_ray.config import load_config
from agd_ray.data.imagenet import build_datasets
from agd_ray.train.batches import FirstBatchTimeout, TimedShard

ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20)
cfg = load_config(None, ["data.name=imagenet", f"data.root={sys.argv[1]}", "data.image_size=64"])
test = build_datasets(cfg.data)["test"]
hog = placement_group([{"CPU": 2}])  # something else holds both CPUs
ray.get(hog.ready(), timeout=30)
try:
    next(TimedShard(test, "test", timeout_s=3).iter_torch_batches(batch_size=2))
except FirstBatchTimeout as err:
    print(err, flush=True)
# The fetch thread stays blocked in the pipeline, as it would in the worker that the
# error ends: leave the way that worker does, without Ray's shutdown.
os._exit(0)
"""


def test_a_starved_pipeline_stops_after_the_first_batch_timeout(shards, tmp_path):
    # in a fresh Python: the starved pipeline's executor outlives the error there
    run = subprocess.run(
        [sys.executable, "-c", STARVED, str(shards)],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )  # fmt: skip
    assert run.stdout.startswith(
        "no batch of the test split from the Ray Data pipeline after 3 s (waiting for 1 free "
        "CPU for each read-and-decode task; 0 of the cluster's 2 CPUs are free now)"
    ), run.stdout + run.stderr[-3000:]
