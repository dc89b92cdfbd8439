"""Refuse a trial that the cluster can never hold, instead of letting Ray wait forever.

Ray queues a resource request it cannot place and waits for nodes that a fixed-size
cluster will never get (Train and Tune only print a warning, every minute). Once Ray
is up, each distinct per-trial request (workers x CPUs, and GPUs) is compared with
what the cluster can ever provide:

- a Ray instance this process started (``agd-ray train`` on a laptop): its node as
  it is; it never grows, so an oversize request is a ConfigError (exit status 2);
- a cluster whose autoscaler publishes its limits (autoscaler v2, e.g. KubeRay):
  the most its node groups can reach, the same limits Ray Train checks;
- any other cluster that we joined: its nodes now. An autoscaler that does not
  publish its limits (v1, the cluster launcher) may still add nodes, so there an
  oversize request is only a warning and the run waits for the autoscaler.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from agd_ray.config import ConfigError, ScalingConfig


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


def _amount(x: float, name: str) -> str:
    return f"{x:g} {name}" + ("" if x == 1 else "s")


def refusal(scaling: ScalingConfig, cap: Capacity) -> ConfigError | None:
    """Why ``scaling`` can never be placed on ``cap`` (naming the key), or None."""
    n = scaling.num_workers
    per_worker = {"CPU": scaling.cpus_per_worker, "GPU": 1.0 if scaling.use_gpu else 0.0}
    key = {"CPU": "scaling.cpus_per_worker", "GPU": "scaling.use_gpu"}
    for name, need in per_worker.items():
        if not need:
            continue
        have_total, have_node = cap.total.get(name, 0.0), cap.largest_node.get(name, 0.0)
        if name == "GPU" and have_total == 0:
            return ConfigError(
                key[name], "the cluster has no GPUs; set scaling.use_gpu: false to train on CPUs"
            )
        if need > have_node:
            return ConfigError(
                key[name],
                f"each worker asks for {_amount(need, name)}, "
                f"but the largest node has {_amount(have_node, name)}",
            )
        if need * n > have_total:
            return ConfigError(
                "scaling.num_workers",  # n > 1 here: one worker fits on the largest node
                f"{n} workers x {_amount(need, name)} = {_amount(need * n, name)} per trial, "
                f"but the cluster has {_amount(have_total, name)} in all",
            )
    return None


def check_resources(scalings: list[ScalingConfig], rename=lambda key: key) -> None:
    """Raise ConfigError if a trial can never be placed; warn instead when an
    autoscaler we cannot read might still grow the cluster. ``rename`` maps the
    offending key to where the user set it (e.g. a sweep's grid)."""
    cap = cluster_capacity()
    for scaling in dict.fromkeys(scalings):  # distinct, in order
        err = refusal(scaling, cap)
        if err is None:
            continue
        err = ConfigError(rename(err.key), err.problem)
        if cap.fixed:
            raise err
        print(f"warning: {err} (now; waiting in case an autoscaler adds nodes)", file=sys.stderr)
