"""What a trial is, as every stage sees it: its spec (from the sweep's grid), who it
is while it trains (for W&B and storage) and its outcome (from training, for the
result files). A leaf: it imports nothing of agd-ray's train/ or sweep/, which
both import it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agd_ray.config import ExperimentConfig, get_dotted

# Architecture keys that get a column in trials.parquet even when not swept.
ARCH_COLUMNS = ("data.name", "model.arch", "model.depth", "model.width", "train.batch_size")


def value_text(value: Any) -> str:
    """A swept value as the config and the trials' groups write it: booleans as
    ``true``/``false`` and sequences as ``[0.9, 0.95]`` (YAML's, JSON's), everything
    else as it prints."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    return str(value)


@dataclass(frozen=True)
class TrialSpec:
    """One trial as the grid made it. Its config is validated once, by the grid's
    expansion, and travels as this object (pickled) to the Tune trial and the Train
    workers."""

    trial_id: str
    config: ExperimentConfig  # the trial's own config (its sweep section is unused)
    group: str  # tuning group: the architecture point + seed
    columns: dict[str, Any] = field(default_factory=dict)  # config-key columns

    @property
    def optimizer(self) -> str:
        return self.config.optimizer.name

    @property
    def seed(self) -> int:
        return self.config.train.seed


@dataclass(frozen=True)
class TrialInfo:
    """Who this run is: its trial id, the sweep's storage (for a stable W&B run id)
    and where offline W&B runs go."""

    trial_id: str
    storage: str = ""
    wandb_dir: str | None = None


@dataclass
class TrialOutcome:
    trial_id: str
    status: str
    history: list[dict[str, Any]] = field(default_factory=list)
    params: int | None = None
    error: str | None = None
    started: float | None = None  # unix time the run (or its last restart) began
    finished: float | None = None


def single_trial(cfg: ExperimentConfig) -> TrialSpec:
    """The one trial of ``agd-ray train`` (the sweep section is ignored)."""
    group = f"seed={cfg.train.seed}"
    return TrialSpec(cfg.name, cfg, group, {k: get_dotted(cfg, k) for k in ARCH_COLUMNS})
