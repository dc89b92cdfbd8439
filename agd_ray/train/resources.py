"""Refuse a trial that the cluster can never hold, instead of letting Ray wait forever.

Ray queues a resource request it cannot place and waits for nodes that a fixed-size
cluster will never get (Train and Tune only print a warning, every minute). Once Ray
is up, each distinct per-trial request (workers x CPUs, GPUs, and the CPU that a Ray
Data pipeline needs beside them) is compared with what the cluster can ever provide:

- a Ray instance this process started (``agd-ray train`` on a laptop): its node as
  it is; it never grows, so an oversize request is a ConfigError (exit status 2);
- a cluster whose autoscaler publishes its limits (autoscaler v2, e.g. KubeRay):
  the most its node groups can reach, the same limits Ray Train checks;
- any other cluster that we joined: its nodes now. An autoscaler that does not
  publish its limits (v1, the cluster launcher) may still add nodes, so there an
  oversize request is only a warning and the run waits for the autoscaler.

The data budget: a run that streams through Ray Data (imagenet) reads and decodes on
tasks of ``DECODE_CPUS`` each, which Ray places only on CPUs that no Train worker
holds. Workers that take every CPU leave the pipeline none and the run would wait for
its first batch forever, so such a run is refused. Fractional GPUs: a GPU holds as
many workers as whole fractions fit in it (0.3: three), so workers are counted per
GPU, as Ray places them.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from agd_ray.config import ConfigError, ExperimentConfig, ScalingConfig
from agd_ray.data import streams
from agd_ray.data.imagenet import DECODE_CPUS


@dataclass(frozen=True)
class Capacity:
    total: dict[str, float]  # the most the cluster can ever hold, per resource
    largest_node: dict[str, float]  # the most one node can hold (a worker sits on one)
    fixed: bool  # False: an autoscaler we cannot read may still add nodes


def _max_each(resources: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in resources:
        for name, amount in r.items():
            out[name] = max(out.get(name, 0.0), float(amount))
    return out


def cluster_capacity() -> Capacity:
    """What the connected Ray cluster can ever provide (Ray must be initialised)."""
    import ray
    from ray._private import state, worker

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    total, largest = dict(ray.cluster_resources()), _max_each(nodes)
    try:  # published by autoscalers that know their node groups' limits
        config = state.state.get_cluster_config()
        limits = state.state.get_max_resources_from_cluster_config()
    except Exception:  # private API: if it moves, fall back to the nodes we see
        config = limits = None
    if config is not None and limits:
        groups = [dict(g.resources) for g in config.node_group_configs if g.max_count != 0]
        return Capacity(_max_each([total, limits]), _max_each([largest, *groups]), fixed=True)
    started_here = bool(getattr(worker._global_node, "head", False))
    return Capacity(total, largest, fixed=started_here)


def gpu_slots(gpus_per_worker: float, gpus: float) -> int:
    """Workers that ``gpus`` GPUs hold at ``gpus_per_worker`` each: whole GPUs per
    worker, or as many whole fractions per GPU as fit (Ray does not split a worker's
    fraction over two GPUs)."""
    if gpus_per_worker >= 1:
        return int(gpus // gpus_per_worker)
    return int(gpus) * math.floor(1 / gpus_per_worker + 1e-9)


def _over(need: float, have: float) -> bool:
    return need > have + 1e-9  # 10 x 0.1 CPU fit in 1 CPU, though not in floats


def _amount(x: float, name: str) -> str:
    return f"{x:g} {name}" + ("" if x == 1 else "s")


def refusal(
    scaling: ScalingConfig, cap: Capacity, streaming: bool = False, trial: bool = False
) -> ConfigError | None:
    """Why ``scaling`` can never be placed on ``cap`` (naming the key), or None.
    ``streaming``: the run's data stream through Ray Data, which needs CPUs beside the
    workers; ``trial``: a sweep trial, whose driver asks for ``driver_resources``."""
    n, cpus = scaling.num_workers, scaling.worker_cpus(streaming)
    err = _cpu_refusal(n, cpus, cap)
    if err is None and scaling.use_gpu:
        err = _gpu_refusal(n, scaling.gpus_per_worker, cap)
    if err is None and streaming and _over(n * cpus + DECODE_CPUS, cap.total.get("CPU", 0.0)):
        err = ConfigError(
            "scaling.cpus_per_worker",
            f"{n} workers x {_amount(cpus, 'CPU')} leave the Ray Data pipeline no CPU "
            f"of the cluster's {cap.total.get('CPU', 0.0):g} (its read and decode tasks "
            f"take {_amount(DECODE_CPUS, 'CPU')} each); lower scaling.cpus_per_worker "
            f"(streaming default {ScalingConfig.STREAMING_CPUS_PER_WORKER:g}) or "
            "scaling.num_workers",
        )
    if err is None and trial:
        err = _driver_refusal(scaling.driver_resources or {}, cap)
    return err


def _cpu_refusal(n: int, cpus: float, cap: Capacity) -> ConfigError | None:
    have_total, have_node = cap.total.get("CPU", 0.0), cap.largest_node.get("CPU", 0.0)
    if _over(cpus, have_node):
        return ConfigError(
            "scaling.cpus_per_worker",
            f"each worker asks for {_amount(cpus, 'CPU')}, "
            f"but the largest node has {_amount(have_node, 'CPU')}",
        )
    if _over(n * cpus, have_total):
        return ConfigError(
            "scaling.num_workers",  # n > 1 here: one worker fits on the largest node
            f"{n} workers x {_amount(cpus, 'CPU')} = {_amount(n * cpus, 'CPU')} per trial, "
            f"but the cluster has {_amount(have_total, 'CPU')} in all",
        )
    return None


def _gpu_refusal(n: int, gpus: float, cap: Capacity) -> ConfigError | None:
    have_total, have_node = cap.total.get("GPU", 0.0), cap.largest_node.get("GPU", 0.0)
    if have_total == 0:
        return ConfigError(
            "scaling.use_gpu",
            "the cluster has no GPUs; set scaling.use_gpu: false to train on CPUs",
        )
    if _over(gpus, have_node):
        return ConfigError(
            "scaling.gpus_per_worker",
            f"each worker asks for {_amount(gpus, 'GPU')}, "
            f"but the largest node has {_amount(have_node, 'GPU')}",
        )
    slots = gpu_slots(gpus, have_total)
    if n > slots:
        return ConfigError(
            "scaling.num_workers",
            f"{n} workers x {_amount(gpus, 'GPU')} per trial, but the cluster's "
            f"{_amount(have_total, 'GPU')} hold {slots} such workers",
        )
    return None


def _driver_refusal(driver: dict[str, float], cap: Capacity) -> ConfigError | None:
    for name, amount in driver.items():
        have = cap.largest_node.get(name, 0.0)
        if _over(amount, have):
            return ConfigError(
                "scaling.driver_resources",
                f"trial drivers ask for {amount:g} {name!r}, but no node has "
                f"{'that much' if have else 'that resource'} (give it to a node: "
                f"ray start --resources='{{\"{name}\": 1}}')",
            )
    return None


def check_resources(
    runs: list[ExperimentConfig | ScalingConfig], rename=lambda key: key, trials: bool = False
) -> None:
    """Raise ConfigError if a run can never be placed; warn instead when an autoscaler
    we cannot read might still grow the cluster. Pass whole configs: only they tell
    whether the data stream through Ray Data (a ``ScalingConfig`` alone is taken as
    in-memory data). ``rename`` maps the offending key to where the user set it (e.g.
    a sweep's grid); ``trials``: the runs are sweep trials (``driver_resources``)."""
    cap = cluster_capacity()
    requests = {}
    for run in runs:  # distinct requests, in order
        if isinstance(run, ExperimentConfig):
            scaling, streaming = run.scaling, streams(run.data)
        else:
            scaling, streaming = run, False
        requests[(scaling.model_dump_json(), streaming)] = (scaling, streaming)
    for scaling, streaming in requests.values():
        err = refusal(scaling, cap, streaming, trials)
        if err is None:
            continue
        err = ConfigError(rename(err.key), err.problem)
        if cap.fixed:
            raise err
        print(f"warning: {err} (now; waiting in case an autoscaler adds nodes)", file=sys.stderr)


def default_concurrency(specs: list) -> int:
    """How many of a sweep's trials (``TrialSpec``s) fit on the cluster at once, by
    their CPU (and GPU) needs: a GPU holds as many trials' workers as whole fractions
    ``gpus_per_worker`` fit in it; a trial streaming through Ray Data also counts the
    CPU of its pipeline's tasks; ``driver_resources`` count too."""
    import ray

    total = ray.cluster_resources()

    def fits(name: str, need: float) -> int:  # x // need, safe from 1 // 0.1 == 9.0
        return math.floor(total.get(name, 0) / need + 1e-9)

    limits = []
    for s in specs:
        sc, streaming = s.config.scaling, streams(s.config.data)
        cpus = sc.num_workers * sc.worker_cpus(streaming) + (DECODE_CPUS if streaming else 0)
        limit = fits("CPU", cpus)
        if sc.use_gpu:
            limit = min(limit, gpu_slots(sc.gpus_per_worker, total.get("GPU", 0)) // sc.num_workers)
        for name, amount in (sc.driver_resources or {}).items():
            limit = min(limit, fits(name, amount))
        limits.append(limit)
    return max(1, int(min(limits)))
