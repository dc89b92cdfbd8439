"""Each finished trial's outcome as one JSON file in the sweep's storage (a local
folder or an s3:// / gs:// URI, through ``agd_ray.storage.Storage``), written whole.

The trial writes its own outcome before it ends, so the outcomes survive the loss
of the driver, and a trial that finds its outcome already stored is not re-run.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import pyarrow.fs as pafs

from agd_ray.storage import Storage
from agd_ray.trial import TrialOutcome, TrialSpec

DONE = ("completed", "diverged", "stopped")  # stopped: by ASHA or SHA (sweep.scheduler)
PARTIAL = "unfinished"
"""What a trial that SHA may pause has trained when it reports a rung: unfinished
(``--resume`` goes on with it); the scheduler makes it ``stopped`` if its grid stops
it there."""


def unfinished(specs: list[TrialSpec], stored: dict[str, TrialOutcome]) -> list[TrialSpec]:
    """The trials without a finished (completed or diverged) stored outcome."""
    return [s for s in specs if not (s.trial_id in stored and stored[s.trial_id].status in DONE)]


class OutcomeStore:
    def __init__(self, uri: str):
        self.storage = Storage(uri)

    def put(self, outcome: TrialOutcome) -> None:
        self.storage.write_bytes(f"{outcome.trial_id}.json", json.dumps(asdict(outcome)).encode())

    def mark_stopped(self, trial_id: str) -> None:
        """The scheduler's decision, written before the trial is told to stop: a trial
        whose run ends in Tune's stop finds it (``stop_marked``) and stores itself
        ``stopped``; without it the stop was the sweep's end (an interruption), and
        the trial stays unfinished."""
        self.storage.write_bytes(f"{trial_id}.stop", b"")

    def stop_marked(self, trial_id: str) -> bool:
        return self.storage.exists(f"{trial_id}.stop")

    def stop_at_rung(self, trial_id: str) -> None:
        """A trial at an SHA rung (its ``PARTIAL`` outcome stored) that its grid stops."""
        self.mark_stopped(trial_id)
        outcome = self.get(trial_id)
        if outcome is not None and outcome.status == PARTIAL:
            outcome.status = "stopped"
            self.put(outcome)

    def get(self, trial_id: str) -> TrialOutcome | None:
        data = self.storage.read_bytes(f"{trial_id}.json")
        return TrialOutcome(**json.loads(data)) if data else None

    def all(self) -> dict[str, TrialOutcome]:
        storage = self.storage
        selector = pafs.FileSelector(storage.root, allow_not_found=True)
        outcomes = {}
        for info in storage.fs.get_file_info(selector):
            name = os.path.basename(info.path)
            if name.endswith(".json") and not name.startswith("."):
                outcome = self.get(name.removesuffix(".json"))
                if outcome is not None:
                    outcomes[outcome.trial_id] = outcome
        return outcomes
