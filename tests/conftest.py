"""Test environment: Ray quiet and local, MNIST-1D cached in a per-session folder."""

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
os.environ.setdefault("WANDB_MODE", "offline")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """Each test session generates MNIST-1D once, into its own cache."""
    if "AGD_RAY_CACHE" not in os.environ:
        os.environ["AGD_RAY_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture(scope="module")
def ray_session():
    """One small local Ray instance per test module (ENVIRONMENT.md's recipe). Its
    workers' output stays in their log files, as the CLI keeps it unless --verbose
    (``ensure_ray``): a test of what a user sees does not see Ray's teardown of a
    trial actor (a SIGTERM mid-exit prints a SystemExit traceback in its log)."""
    import ray

    ray.init(
        num_cpus=4,
        include_dashboard=False,
        object_store_memory=200 * 2**20,
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()
