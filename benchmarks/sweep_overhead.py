"""Sweep overhead: wall time of a sweep of 1-worker trials divided by
(sum of the trials' own training time / concurrency). Goals (issue 15): <= 1.15 for
trials of about 4 s, <= 1.05 for long ones.

    uv run python benchmarks/sweep_overhead.py [--trials 8] [--epochs 30] [--concurrency 2]

"Own training time" is each trial's ``wall_s`` (its epochs: training and evaluation,
as recorded in trials.parquet). The sweep's wall time runs from the call to
``run_sweep`` to its return (Ray is started first and not counted; its start-up is
printed separately).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--width", type=int, default=256)
    args = parser.parse_args()

    import ray

    from agd_ray.config import load_config
    from agd_ray.sweep.runner import run_sweep

    seeds = list(range(args.trials))
    cfg = load_config(
        None,
        [
            "name=overhead",
            f"train.epochs={args.epochs}",
            f"model.width={args.width}",
            f"sweep.seeds={seeds}",
            f"sweep.max_concurrent_trials={args.concurrency}",
        ],
    )
    t0 = time.perf_counter()
    ray.init(num_cpus=args.concurrency, include_dashboard=False)
    ray_start = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as out:
        start, start_unix = time.perf_counter(), time.time()
        outcomes = run_sweep(cfg, out, echo=lambda line: None).outcomes
        wall = time.perf_counter() - start
    ray.shutdown()

    own = [o.history[-1]["wall_s"] for o in outcomes.values()]
    ideal = sum(own) / args.concurrency
    print(f"trials: {len(own)} x {args.epochs} epochs, concurrency {args.concurrency}")
    print(f"ray start-up (not counted): {ray_start:.1f}s")
    print(f"per-trial training time: mean {sum(own) / len(own):.2f}s")
    print(f"sweep wall time: {wall:.1f}s; sum(training)/concurrency: {ideal:.1f}s")
    print(f"overhead ratio: {wall / ideal:.3f}  (goals: <= 1.15 for ~4 s trials, <= 1.05 long)")
    # where the rest goes
    first = min(o.started for o in outcomes.values()) - start_unix
    inside = sum(o.finished - o.started - o.history[-1]["wall_s"] for o in outcomes.values())
    print(f"  until the first trial starts training: {first:.1f}s")
    print(f"  inside trials, outside the epochs (imports, data, model, store): {inside:.1f}s total")
    if os.environ.get("VERBOSE"):
        for o in sorted(outcomes.values(), key=lambda o: o.started):
            print(
                f"    {o.trial_id}: start {o.started - start_unix:6.2f}s"
                f"  end {o.finished - start_unix:6.2f}s  epochs {o.history[-1]['wall_s']:.2f}s"
            )


if __name__ == "__main__":
    main()
