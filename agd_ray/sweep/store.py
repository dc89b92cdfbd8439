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


def unfinished(specs: list[TrialSpec], stored: dict[str, TrialOutcome]) -> list[TrialSpec]:
    """The trials without a finished (completed or diverged) stored outcome."""
    return [s for s in specs if not (s.trial_id in stored and stored[s.trial_id].status in DONE)]


class OutcomeStore:
    def __init__(self, uri: str):
        self.storage = Storage(uri)

    def put(self, outcome: TrialOutcome) -> None:
        self.storage.write_bytes(f"{outcome.trial_id}.json", json.dumps(asdict(outcome)).encode())

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
