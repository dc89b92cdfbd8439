"""Where a sweep keeps things (``SweepPaths``), and each finished trial's outcome as
one JSON file in the sweep's storage (a local folder or an s3:// / gs:// URI,
through pyarrow.fs), written atomically.

The trial writes its own outcome before it ends, so the outcomes survive the loss
of the driver, and a trial that finds its outcome already stored is not re-run.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.fs as pafs

from agd_ray.config import ExperimentConfig
from agd_ray.trial import TrialOutcome, TrialSpec

DONE = ("completed", "diverged")


def resolve_uri(path: str) -> str:
    """Absolute local path, or the URI unchanged."""
    return path if "://" in path else str(Path(path).expanduser().resolve())


@dataclass(frozen=True)
class SweepPaths:
    out_dir: Path  # OUT/<name>: the Parquet files (and offline W&B runs, DIR/wandb/)
    storage: str  # Ray's storage: Tune experiment, Train runs, outcomes

    @property
    def outcomes(self) -> str:
        return f"{self.storage}/outcomes"

    @property
    def train_runs(self) -> str:
        return f"{self.storage}/train"

    @property
    def tune_experiment(self) -> str:
        return f"{self.storage}/tune"


def sweep_paths(cfg: ExperimentConfig, out: str | Path) -> SweepPaths:
    out_dir = Path(out).resolve() / cfg.name
    storage = resolve_uri(cfg.scaling.storage_path or str(out_dir / "ray"))
    if cfg.scaling.storage_path:
        storage = f"{storage.rstrip('/')}/{cfg.name}"
    return SweepPaths(out_dir, storage)


def unfinished(specs: list[TrialSpec], stored: dict[str, TrialOutcome]) -> list[TrialSpec]:
    """The trials without a finished (completed or diverged) stored outcome."""
    return [s for s in specs if not (s.trial_id in stored and stored[s.trial_id].status in DONE)]


class OutcomeStore:
    def __init__(self, uri: str):
        self.uri = resolve_uri(uri)
        self.fs, self.root = pafs.FileSystem.from_uri(self.uri)

    def _path(self, trial_id: str) -> str:
        return f"{self.root}/{trial_id}.json"

    def put(self, outcome: TrialOutcome) -> None:
        self.fs.create_dir(self.root, recursive=True)
        tmp = f"{self.root}/.{outcome.trial_id}.{uuid.uuid4().hex}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(json.dumps(asdict(outcome)).encode())
        self.fs.move(tmp, self._path(outcome.trial_id))

    def get(self, trial_id: str) -> TrialOutcome | None:
        try:
            with self.fs.open_input_stream(self._path(trial_id)) as f:
                return TrialOutcome(**json.loads(f.read()))
        except (FileNotFoundError, OSError):
            return None

    def all(self) -> dict[str, TrialOutcome]:
        selector = pafs.FileSelector(self.root, allow_not_found=True)
        outcomes = {}
        for info in self.fs.get_file_info(selector):
            name = os.path.basename(info.path)
            if name.endswith(".json") and not name.startswith("."):
                outcome = self.get(name.removesuffix(".json"))
                if outcome is not None:
                    outcomes[outcome.trial_id] = outcome
        return outcomes
