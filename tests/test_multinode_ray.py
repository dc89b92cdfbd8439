"""Multi-node: a simulated cluster (ray.cluster_utils.Cluster) runs a 2-worker trial
spread over two nodes; checkpoints and outcomes go to scaling.storage_path, so the
results survive the loss of a node and of the driver's output folder."""

import shutil

import pyarrow.parquet as pq
import pytest

from agd_ray.config import load_config
from agd_ray.sweep.runner import run_sweep

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # see pyproject.toml


@pytest.fixture
def two_node_cluster():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]  # one Train worker each
    ray.init(address=cluster.address)
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()


def test_storage_path_survives_losing_a_node(two_node_cluster, tmp_path):
    import ray

    cluster, nodes = two_node_cluster
    storage = tmp_path / "shared"  # stands in for s3:// / gs:// (one filesystem here)
    cfg = load_config(
        None,
        [
            "name=mn",
            "data.num_samples=1000",
            "train.epochs=2",
            "train.batch_size=32",
            "scaling.num_workers=2",
            f"scaling.storage_path={storage}",
            "sweep.grid={model.width: [16]}",
            "sweep.report=false",
            "wandb.mode=disabled",
        ],
    )
    assert len([n for n in ray.nodes() if n["Alive"]]) == 3
    result = run_sweep(cfg, tmp_path / "out", echo=lambda line: None)
    (outcome,) = result.outcomes.values()
    assert outcome.status == "completed"
    checkpoints = list((storage / "mn/train" / outcome.trial_id).glob("checkpoint_*"))
    assert checkpoints, "Train checkpoints go to scaling.storage_path"
    assert (storage / "mn/outcomes" / f"{outcome.trial_id}.json").is_file()

    # lose a worker node and the driver's output folder: --resume rebuilds the
    # results from the shared storage without training again
    cluster.remove_node(nodes[1])
    shutil.rmtree(tmp_path / "out")
    again = run_sweep(cfg, tmp_path / "out", resume=True, echo=lambda line: None)
    assert again.outcomes[outcome.trial_id].history == outcome.history
    trials = pq.read_table(tmp_path / "out/mn/trials.parquet").to_pylist()
    assert [t["status"] for t in trials] == ["completed"]
