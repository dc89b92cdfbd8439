"""Ray integration: fractional GPUs. On a Ray with one (logical) GPU and the trials'
``use_gpu`` falling back to the CPU device (no CUDA here), four one-worker trials of
``gpus_per_worker: 0.25`` run at the same time on that one GPU."""

import pytest

from agd_ray.config import load_config
from agd_ray.sweep.grid import expand
from agd_ray.sweep.runner import default_concurrency, run_sweep

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_one_gpu():
    """conftest's recipe, with one GPU that Ray schedules but no device behind it."""
    import ray

    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, object_store_memory=200 * 2**20)
    yield ray
    ray.shutdown()


def test_four_quarter_gpu_trials_share_one_gpu(ray_one_gpu, tmp_path):
    cfg = load_config(
        None,
        [
            "name=quarters",
            "data.num_samples=1000",
            "train.epochs=1",  # a trial's start-up (seconds) dwarfs the stagger of starts
            "train.noise_scale=false",
            "scaling.use_gpu=true",
            "scaling.gpus_per_worker=0.25",
            "sweep.seeds=[0, 1, 2, 3]",
            "wandb.mode=disabled",
        ],
    )
    assert ray_one_gpu.cluster_resources()["GPU"] == 1
    assert default_concurrency(expand(cfg)) == 4
    lines = []
    result = run_sweep(cfg, tmp_path, echo=lines.append)
    assert result.ok and len(result.outcomes) == 4, result.outcomes
    assert "4 at a time" in lines[0]
    spans = [(o.started, o.finished) for o in result.outcomes.values()]
    assert max(start for start, _ in spans) < min(end for _, end in spans)  # all four at once
