"""Resources without Ray: the scaling keys, the refusal of runs that leave a Ray Data
pipeline no CPU or ask for more (fractional) GPUs than there are, what a sweep trial
asks Tune for and how many run at once, and the first-batch timeout."""

import threading
import time

import pytest

from agd_ray.config import ConfigError, ScalingConfig, load_config
from agd_ray.sweep.runner import default_concurrency
from agd_ray.sweep.trainable import trial_resources
from agd_ray.train.batches import FirstBatchTimeout, first_batch_within
from agd_ray.train.resources import Capacity, check_resources, gpu_slots, refusal
from agd_ray.trial import single_trial

TWO_CPUS = Capacity(total={"CPU": 2.0}, largest_node={"CPU": 2.0}, fixed=True)
EIGHT_CPUS_ONE_GPU = {"CPU": 8.0, "GPU": 1.0}
ONE_GPU = Capacity(EIGHT_CPUS_ONE_GPU, EIGHT_CPUS_ONE_GPU, fixed=True)
IMAGENET = ["data.name=imagenet", "data.root=/shards", "train.batch_size=64"]


def _err(overrides):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    return str(info.value)


# --- the keys ----------------------------------------------------------------------


def test_worker_cpus_default_to_half_a_cpu_only_when_streaming():
    scaling = ScalingConfig()
    assert scaling.cpus_per_worker is None
    assert (scaling.worker_cpus(streaming=False), scaling.worker_cpus(streaming=True)) == (1, 0.5)
    assert ScalingConfig(cpus_per_worker=2).worker_cpus(streaming=True) == 2


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["scaling.gpus_per_worker=1.5"], "scaling.gpus_per_worker: 1.5: more than one GPU"),
        (["scaling.gpus_per_worker=0"], "scaling.gpus_per_worker: Input should be greater"),
        (["scaling.cpus_per_worker=-1"], "scaling.cpus_per_worker: Input should be greater"),
        (["scaling.driver_resources={CPU: 1}"], "scaling.driver_resources: CPU is not a custom"),
        (["scaling.driver_resources={head: 0}"], "scaling.driver_resources.head: Input should be"),
        (["scaling.first_batch_timeout_s=0"], "scaling.first_batch_timeout_s: Input should be"),
    ],
)
def test_bad_scaling_keys_are_refused_in_one_line(overrides, expected):
    err = _err(overrides)
    assert err.startswith(expected) and "\n" not in err, err


def test_good_scaling_keys():
    cfg = load_config(
        None,
        [
            "scaling.gpus_per_worker=0.25",
            "scaling.driver_resources={head: 0.01}",
            "scaling.first_batch_timeout_s=null",
        ],
    )
    assert cfg.scaling.gpus_per_worker == 0.25 and cfg.scaling.driver_resources == {"head": 0.01}
    assert cfg.scaling.first_batch_timeout_s is None
    assert load_config(None, ["scaling.gpus_per_worker=2"]).scaling.gpus_per_worker == 2


# --- the data budget ---------------------------------------------------------------


def test_streaming_runs_leave_the_pipeline_a_cpu():
    two = ScalingConfig(num_workers=2)
    assert refusal(two, TWO_CPUS, streaming=True) is None  # 2 x 0.5 CPU: one left
    assert refusal(ScalingConfig(num_workers=2, cpus_per_worker=1), TWO_CPUS) is None  # in memory
    err = refusal(ScalingConfig(num_workers=2, cpus_per_worker=1), TWO_CPUS, streaming=True)
    assert err.key == "scaling.cpus_per_worker"
    assert err.problem.startswith("2 workers x 1 CPU leave the Ray Data pipeline no CPU")
    assert "scaling.num_workers" in err.problem and "\n" not in str(err)
    err = refusal(ScalingConfig(num_workers=4), TWO_CPUS, streaming=True)  # 4 x 0.5 + 1 > 2
    assert err.key == "scaling.cpus_per_worker" and "4 workers x 0.5 CPUs" in err.problem
    # ten tenths of a CPU fit in one, though not in floating point
    assert refusal(ScalingConfig(num_workers=10, cpus_per_worker=0.1), TWO_CPUS, True) is None


def test_check_resources_needs_the_whole_config_to_see_the_stream(monkeypatch):
    monkeypatch.setattr("agd_ray.train.resources.cluster_capacity", lambda: TWO_CPUS)
    cfg = load_config(None, [*IMAGENET, "scaling.num_workers=2", "scaling.cpus_per_worker=1"])
    with pytest.raises(ConfigError, match=r"^scaling\.cpus_per_worker: 2 workers x 1 CPU leave"):
        check_resources([cfg])
    check_resources([cfg.scaling])  # taken as in-memory data: 2 x 1 CPU fit
    ok = load_config(None, [*IMAGENET, "scaling.num_workers=2"])
    check_resources([ok, ok])


# --- fractional GPUs and driver resources ------------------------------------------


def test_a_gpu_holds_as_many_workers_as_whole_fractions_fit():
    assert [gpu_slots(g, 1) for g in (0.25, 0.3, 0.4, 0.5, 1)] == [4, 3, 2, 2, 1]
    assert (gpu_slots(0.1, 1), gpu_slots(0.4, 2), gpu_slots(2, 4), gpu_slots(1, 0)) == (10, 4, 2, 0)


@pytest.mark.parametrize(
    "workers,gpus,key,text",
    [
        (4, 0.25, None, None),
        (5, 0.25, "scaling.num_workers", "5 workers x 0.25 GPUs per trial, but the cluster's"),
        (3, 0.4, "scaling.num_workers", "1 GPU hold 2 such workers"),
        (1, 2, "scaling.gpus_per_worker", "each worker asks for 2 GPUs, but the largest node"),
    ],
)
def test_fractional_gpus_are_counted_per_gpu(workers, gpus, key, text):
    scaling = ScalingConfig(num_workers=workers, use_gpu=True, gpus_per_worker=gpus)
    err = refusal(scaling, ONE_GPU)
    assert (err and err.key) == key and (err is None or text in err.problem), err


def test_trial_drivers_need_their_custom_resource():
    scaling = ScalingConfig(driver_resources={"head": 0.01})
    assert refusal(scaling, TWO_CPUS) is None  # agd-ray train has no trial drivers
    err = refusal(scaling, TWO_CPUS, trial=True)
    assert err.key == "scaling.driver_resources" and "ray start --resources" in err.problem
    head = Capacity({"CPU": 2.0, "head": 1.0}, {"CPU": 2.0, "head": 1.0}, fixed=True)
    assert refusal(scaling, head, trial=True) is None


def test_what_a_trial_asks_tune_for():
    def asks(*overrides):
        return trial_resources(single_trial(load_config(None, list(overrides))))

    assert asks() == {"CPU": 1, "GPU": 0}
    assert asks("scaling.use_gpu=true", "scaling.gpus_per_worker=0.25") == {"CPU": 1, "GPU": 0.25}
    assert asks(*IMAGENET) == {"CPU": 0.5, "GPU": 0}  # the pipeline's CPU stays free
    driver = "scaling.driver_resources={head: 0.01}"
    assert asks(driver) == {"CPU": 1, "GPU": 0, "head": 0.01}
    assert asks(driver, "scaling.num_workers=2") == {"CPU": 0, "memory": 1, "head": 0.01}


@pytest.mark.parametrize(
    "cluster,overrides,expected",
    [
        ({"CPU": 4, "GPU": 1}, ["scaling.use_gpu=true", "scaling.gpus_per_worker=0.25"], 4),
        ({"CPU": 4, "GPU": 1}, ["scaling.use_gpu=true", "scaling.gpus_per_worker=0.3"], 3),
        ({"CPU": 4, "GPU": 1}, ["scaling.use_gpu=true"], 1),
        ({"CPU": 2}, IMAGENET, 1),  # 0.5 CPU for the trial, 1 for its pipeline
        ({"CPU": 8}, [*IMAGENET, "scaling.num_workers=2"], 4),  # 2 x 0.5 + 1 each
        ({"CPU": 8, "head": 1}, ["scaling.driver_resources={head: 0.5}"], 2),
        ({"CPU": 1}, ["scaling.cpus_per_worker=0.1"], 10),
    ],
)
def test_default_concurrency(monkeypatch, cluster, overrides, expected):
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: cluster)
    specs = [single_trial(load_config(None, overrides))]
    assert default_concurrency(specs) == expected


# --- the first-batch timeout -------------------------------------------------------


def test_a_first_batch_that_does_not_come_stops_the_run_saying_why():
    never = threading.Event()

    def starved():
        never.wait()  # a pipeline whose tasks never get a CPU
        yield 1

    start = time.perf_counter()
    batches = first_batch_within(starved(), 0.2, "the train split", lambda: "1 free CPU")
    with pytest.raises(FirstBatchTimeout) as info:
        next(batches)
    assert time.perf_counter() - start < 5
    assert str(info.value).startswith(
        "no batch of the train split from the Ray Data pipeline after 0.2 s "
        "(waiting for 1 free CPU); give the pipeline CPUs"
    )
    assert "scaling.first_batch_timeout_s" in str(info.value)
    never.set()


def test_batches_that_come_pass_through():
    assert list(first_batch_within(range(5), 5, "x")) == [0, 1, 2, 3, 4]
    assert list(first_batch_within([], 5, "x")) == []
    assert list(first_batch_within(range(3), None, "x")) == [0, 1, 2]

    def broken():
        raise OSError("shard unreadable")
        yield

    with pytest.raises(OSError, match="shard unreadable"):
        list(first_batch_within(broken(), 5, "x"))
