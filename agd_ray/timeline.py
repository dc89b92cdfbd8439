"""Start-up timeline, for finding where a user's wait goes (``benchmarks/startup.py``).

    AGD_RAY_TIMELINE=/tmp/t.log agd-ray train experiments/quickstart.yaml

With ``AGD_RAY_TIMELINE`` set to a file, ``mark(phase)`` appends one line
``<unix time> <pid> <phase>`` to it, from the driver and from every Ray worker (they
inherit the driver's environment). Unset, ``mark`` does nothing.
"""

from __future__ import annotations

import os
import time

ENV = "AGD_RAY_TIMELINE"


def mark(phase: str) -> None:
    path = os.environ.get(ENV)
    if path:
        with open(path, "a") as f:
            f.write(f"{time.time():.6f} {os.getpid()} {phase}\n")


def read(path: str) -> list[tuple[float, int, str]]:
    """The marks in a timeline file, in time order."""
    rows = []
    with open(path) as f:
        for line in f:
            t, pid, phase = line.rstrip("\n").split(" ", 2)
            rows.append((float(t), int(pid), phase))
    return sorted(rows)
