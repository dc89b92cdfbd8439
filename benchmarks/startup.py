"""Where the wait goes: the start-up timeline of ``agd-ray train`` (or ``sweep``), from
the command's launch to its exit, with the training itself separated out.

    uv run python benchmarks/startup.py [train|sweep] [CONFIG] [--set key=value ...]

Runs the command as a user would (a fresh Python through ``uv run``, wandb disabled)
with ``AGD_RAY_TIMELINE`` set, then prints every mark (``agd_ray.timeline``) as
seconds since launch with the gap since the previous one, and the summary:
wall time, training time (the run's own ``wall_s``) and their difference, the
overhead the goal is about.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from agd_ray.timeline import ENV, read


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", nargs="?", default="train", choices=("train", "sweep"))
    p.add_argument("config", nargs="?", default="experiments/quickstart.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--wandb", action="store_true", help="keep W&B on (offline here)")
    p.add_argument("--brief", action="store_true", help="leave out the epochs' marks")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "timeline.log")
        cmd = ["uv", "run", "agd-ray", args.command, args.config, "--out", tmp]
        for item in [*([] if args.wandb else ["wandb.mode=disabled"]), *args.overrides]:
            cmd += ["--set", item]
        start = time.time()
        done = subprocess.run(cmd, env={**os.environ, ENV: log}, capture_output=True, text=True)
        wall = time.time() - start
        if done.returncode:
            sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
        previous = start
        pids: dict[int, str] = {}
        print(f"{'t (s)':>7} {'gap':>6}  process  mark")
        for t, pid, phase in read(log):
            who = pids.setdefault(pid, "driver" if not pids else f"proc {len(pids)}")
            if args.brief and " reported" in phase:
                continue
            print(f"{t - start:7.2f} {t - previous:6.2f}  {who:<7}  {phase}")
            previous = t
        print(f"{wall:7.2f} {start + wall - previous:6.2f}  driver   exit")
        name = next(Path(tmp).glob("*/trials.parquet"))
        trials = pq.read_table(name).to_pylist()
        train_s = sum(t["wall_s"] or 0 for t in trials)
        print(
            f"\n{args.command} {args.config}: wall {wall:.1f} s, training (sum of trials' "
            f"wall_s) {train_s:.1f} s, wall - training {wall - train_s:.1f} s"
        )


if __name__ == "__main__":
    main()
