"""The sweep's Tune callback, on the driver: as each trial ends it rewrites
``trials.parquet`` / ``epochs.parquet`` (an interruption loses only the running
trials) and prints the trial's line; while trials run it feeds the progress line
(``agd_ray.sweep.console``); when the experiment ends it waits for the trial
actors' processes to exit."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agd_ray.results import save_results
from agd_ray.storage import RunPaths
from agd_ray.sweep.console import SweepProgress, format_trial
from agd_ray.sweep.store import DONE, OutcomeStore, unfinished
from agd_ray.sweep.trainable import trial_name
from agd_ray.trial import TrialSpec


def sweep_callback(
    specs: list[TrialSpec],
    paths: RunPaths,
    echo: Callable,
    provenance: dict[str, Any],
    work: dict[str, tuple[float, float]] | None = None,
):
    """The callback for ``tune.RunConfig(callbacks=[...])`` of a sweep of ``specs``;
    the result files it rewrites carry ``provenance``; ``work``: each trial's epoch
    (steps, FLOPs) for the progress line's ETA (``sweep.cost``)."""
    from ray import tune

    def progress() -> SweepProgress:
        todo = unfinished(specs, OutcomeStore(paths.outcomes).all())
        return SweepProgress(specs, todo, echo, work=work)

    class SweepCallback(tune.Callback):
        """On the driver: rewrite the Parquet files and print a line per finished
        trial; while trials run, show their progress (``SweepProgress``). A restored
        experiment brings this object back from its pickle: the progress starts
        afresh, from the stored outcomes, in ``setup``."""

        def __init__(self):
            self.progress = progress()
            self.pids: set[tuple[str, int]] = set()  # (node ip, pid) of trial actors

        def setup(self, **info):
            self.progress = progress()
            self.pids = set()

        def on_trial_start(self, iteration, trials, trial, **info):
            self.progress.started(trial_name(trial))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.progress.result(trial_name(trial), result)
            if "pid" in result:
                self.pids.add((result.get("node_ip", ""), result["pid"]))

        def on_step_end(self, iteration, trials, **info):
            self.progress.waiting({trial_name(t) for t in trials if t.status == "PAUSED"})
            self.progress.tick()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._finished(trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._finished(trial)

        def on_experiment_end(self, trials, **info):
            self.progress.stop()
            _wait_for_trial_actors(self.pids)

        def _finished(self, trial):
            _await_outcome(OutcomeStore(paths.outcomes), trial_name(trial))
            outcomes = OutcomeStore(paths.outcomes).all()
            save_results([(s, outcomes.get(s.trial_id)) for s in specs], paths, provenance)
            trial_id = trial_name(trial)
            spec = next(s for s in specs if s.trial_id == trial_id)
            done = sum(1 for o in outcomes.values() if o.status in DONE)
            line = f"[{done}/{len(specs)}] " + format_trial(spec, outcomes.get(trial_id))
            self.progress.finished(trial_id, line, outcomes.get(trial_id))

    return SweepCallback()


def _await_outcome(store: OutcomeStore, trial_id: str, timeout_s: float = 2.0) -> None:
    """Wait (a little) for a trial that Tune has just ended to store its outcome: one
    its scheduler stopped stores it from its own thread, as Tune stops it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        outcome = store.get(trial_id)
        if outcome is not None and outcome.status in (*DONE, "failed"):
            return
        time.sleep(0.02)


def _wait_for_trial_actors(pids: set[tuple[str, int]], timeout_s: float = 10.0) -> None:
    """Wait (a little) until this node's trial actor processes have exited.

    Tune has told them to stop when the experiment ends, but a process still runs
    its interpreter's shutdown for a moment after saying so; a driver that exits
    then (ending a local Ray) has them killed by SIGTERM mid-shutdown, and Ray's
    handler prints a ``SystemExit`` traceback in each one's log."""
    import ray

    here = ray.util.get_node_ip_address()
    local = {pid for ip, pid in pids if ip == here}
    deadline = time.monotonic() + timeout_s
    while local and time.monotonic() < deadline:
        local = {pid for pid in local if _process_runs(pid)}
        if local:
            time.sleep(0.1)


def _process_runs(pid: int) -> bool:
    if os.path.isdir("/proc"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    try:  # no /proc (macOS): the signal-0 probe
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
