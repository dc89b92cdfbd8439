"""Early stopping for the baselines' grids against training every grid point to the
end: per baseline, the best of grid (chosen on validation loss, scored on test,
averaged over the tuning groups) and the share of the grid's samples trained.
Goal (issue 15): within 0.5 points of the full grid's best, at <= 50 % of its samples.

    uv run python benchmarks/early_stopping.py experiments/quickstart.yaml \\
        [--scheduler sha asha] [--set sweep.grace_epochs=2] [--out DIR] [--keep]

Each sweep runs through the CLI (``agd-ray sweep``, no report) in a fresh output
folder; a run already in ``--out`` (same config name and scheduler) is read back
instead of run again, so a second scheduler can be compared with one fifo run.
AGD's single runs are never stopped and are left out of the shares.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(config: str, scheduler: str, out: Path, overrides: list[str]) -> tuple[Path, float | None]:
    """The sweep's folder, and its wall time (None when read back from an earlier run)."""
    folder = out / scheduler
    from agd_ray.config import load_config

    name = load_config(config, overrides).name
    if (folder / name / "trials.parquet").exists():
        return folder / name, None
    cmd = [sys.executable, "-m", "agd_ray.cli", "sweep", config, "--out", str(folder)]
    for item in [*overrides, f"sweep.scheduler={scheduler}", "sweep.report=false"]:
        cmd += ["--set", item]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return folder / name, time.perf_counter() - start


def grids(folder: Path) -> dict[str, dict]:
    """Per baseline with a grid: {samples, best test acc per group}."""
    import pyarrow.parquet as pq

    from agd_ray.sweep.summary import summary_from_trials

    table = summary_from_trials(pq.read_table(folder / "trials.parquet").to_pandas())
    out: dict[str, dict] = {}
    for entries in table.values():
        for e in entries:
            if e.runs < 2:  # AGD, or a baseline without a grid: never stopped
                continue
            row = out.setdefault(e.optimizer, {"samples": 0, "acc": [], "stopped": 0})
            row["samples"] += e.samples
            row["stopped"] += e.stopped
            row["acc"].append(e.best_acc if e.best_acc is not None else float("nan"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--scheduler", nargs="+", default=["sha", "asha"])
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--out", help="keep the sweeps here (default: a temporary folder)")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    out = Path(args.out or tempfile.mkdtemp(prefix="early_stopping_"))

    base, wall = run(args.config, "fifo", out, args.overrides)
    full = grids(base)
    walls = {"fifo": wall}
    rows = []
    for scheduler in args.scheduler:
        folder, walls[scheduler] = run(args.config, scheduler, out, args.overrides)
        for name, g in grids(folder).items():
            ref = full[name]
            mean = sum(g["acc"]) / len(g["acc"])
            ref_mean = sum(ref["acc"]) / len(ref["acc"])
            share = g["samples"] / ref["samples"]
            rows.append((scheduler, name, g["stopped"], share, mean, ref_mean))
    print(f"{args.config} {' '.join(args.overrides)}: sweeps in {out}")
    print(f"{'scheduler':<10} {'baseline':<12} {'stopped':>7} {'samples':>8} "
          f"{'best acc':>9} {'fifo best':>9} {'diff':>6}")  # fmt: skip
    for scheduler, name, stopped, share, mean, ref_mean in rows:
        print(f"{scheduler:<10} {name:<12} {stopped:>7} {share:>8.1%} {mean:>9.2%} "
              f"{ref_mean:>9.2%} {100 * (mean - ref_mean):>+6.2f}")  # fmt: skip
    every = sum(g["samples"] for g in full.values())
    for scheduler in args.scheduler:
        done = sum(g["samples"] for g in grids(out / scheduler / base.name).values())
        print(f"{scheduler:<10} {'all grids':<12} {'':>7} {done / every:>8.1%}")
    for scheduler, wall in walls.items():
        if wall is not None:
            print(f"wall time {scheduler}: {wall:.0f} s")


if __name__ == "__main__":
    main()
