"""Weights & Biases: one run per trial, logged from world rank 0 only.

Ray's ``setup_wandb(rank_zero_only=True)`` does not see the rank under Train V2, so
the rank is checked here. The run id is derived from the sweep's storage and the
trial id, so a resumed trial continues its own run. ``wandb.mode: auto`` is online
when an API key is available (``WANDB_API_KEY`` or a netrc login), else offline;
offline runs land under ``WANDB_DIR`` (default: OUT/<name>/wandb) and are uploaded
later with ``wandb sync DIR/wandb/offline-run-*``. With ``scaling.storage_path``
set, each finished offline run is also copied to ``<home>/wandb/`` (it was written
on whichever node trained). The run's config carries ``provenance`` (git commit,
package versions, config hash). The API key is read by wandb from
the environment and is never written to configs, results or checkpoints.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agd_ray.config import ExperimentConfig
from agd_ray.storage import Storage, provenance
from agd_ray.wandb_mode import resolve_mode


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"width": 256}} -> {"model.width": 256}."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "grid":
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def run_id(storage: str, trial_id: str) -> str:
    """Stable across restarts of the same trial of the same sweep."""
    return hashlib.sha1(f"{storage}/{trial_id}".encode()).hexdigest()[:16]


class WandbLogger:
    """A no-op unless this is world rank 0 and wandb is not disabled."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        trial_id: str,
        rank: int,
        storage: str = "",
        directory: str | None = None,
    ):
        self.run = None
        self.every = cfg.wandb.log_every
        # with scaling.storage_path, offline runs are copied to <home>/wandb/ (the
        # home is the storage then): they are written on whichever node trained
        self.home = storage if cfg.scaling.storage_path else None
        mode = resolve_mode(cfg.wandb)
        if rank != 0 or mode == "disabled":
            return
        import wandb

        directory = os.environ.get("WANDB_DIR") or directory
        if directory:
            os.makedirs(directory, exist_ok=True)
        config = flatten(cfg.model_dump(mode="json", exclude={"sweep", "wandb"}))
        config["provenance"] = provenance(cfg)
        init = dict(
            project=cfg.wandb.project,
            entity=cfg.wandb.entity,
            group=cfg.name,
            name=trial_id,
            id=run_id(storage or cfg.name, trial_id),
            resume="allow",
            config=config,
            mode=mode,
            dir=directory,
            reinit="create_new",
            # no requirements scan (0.3 s a run): the config's provenance names the
            # versions that matter
            settings=wandb.Settings(
                silent=True, x_disable_stats=True, x_disable_meta=True, x_save_requirements=False
            ),
        )
        try:
            self.run = wandb.init(**init)
        except Exception:
            if not os.environ.get(SERVICE_ENV):
                raise
            # the driver's service refused it: an earlier attempt of this trial, killed
            # with its run open, still holds the run's id there. A service of its own.
            leave_service()
            self.run = wandb.init(**init)
        _OPEN.add(self.run)

    @property
    def active(self) -> bool:
        return self.run is not None

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def log_epoch(self, step: int, row: dict[str, Any]) -> None:
        if self.run is not None:
            epoch_metrics = {f"epoch/{k}": v for k, v in row.items() if v is not None}
            self.run.log(epoch_metrics, step=step)

    def finish(self, status: str, final: dict[str, Any] | None) -> None:
        if self.run is None:
            return
        self.run.summary["status"] = status
        for key, value in (final or {}).items():
            if value is not None:
                self.run.summary[key] = value
        run_dir = Path(self.run.dir).parent  # .../wandb/offline-run-<time>-<id>
        offline = self.run.settings.mode == "offline"
        self.run.finish(exit_code=0 if status != "failed" else 1)
        _OPEN.discard(self.run)
        self.run = None
        shutdown_service()
        if offline and self.home and run_dir.is_dir():
            Storage(self.home).upload(run_dir, f"wandb/{run_dir.name}")


SERVICE_ENV = "WANDB_SERVICE"  # where wandb.setup() leaves its service's address


@dataclass(frozen=True)
class SharedService:
    """The driver's W&B service, for trials on the driver's node to share: W&B's
    address of it (``WANDB_SERVICE``) and the Ray node it runs on."""

    token: str
    node_id: str


def driver_service(cfg: ExperimentConfig) -> SharedService | None:
    """Start this driver's W&B service (``wandb.setup()``, W&B's way of preparing a
    process and its children) for a sweep's trials on this node: each trial then
    connects to it (tens of ms) instead of starting a service of its own (about
    0.25 s a trial, 0.2 s of it W&B polling for the new service's address). None
    when W&B is disabled or no address was left to share. Call after Ray is up."""
    if resolve_mode(cfg.wandb) == "disabled":
        return None
    import ray
    import wandb

    wandb.setup()
    token = os.environ.get(SERVICE_ENV)
    if not token:
        return None
    return SharedService(token, ray.get_runtime_context().get_node_id())


def join_service(shared: SharedService | None) -> None:
    """In a trial: use the driver's W&B service if this process runs on its node
    (a socket there); elsewhere W&B starts one here as usual."""
    import ray

    if shared is not None and ray.get_runtime_context().get_node_id() == shared.node_id:
        os.environ[SERVICE_ENV] = shared.token


_OPEN: set = set()
"""Runs this process started and has not finished: a trial that raised, or that
Tune stopped, before its loop finished the run."""


def leave_service() -> None:
    """Disconnect from the driver's service; this process's next run starts its own
    (until ``join_service`` again)."""
    import wandb

    wandb.teardown()
    os.environ.pop(SERVICE_ENV, None)


def shutdown_service(failed: bool = False) -> None:
    """Finish this process's open runs (exit code 1 if ``failed``), then stop its W&B
    service now, if it runs (W&B starts it again for a later run in the same process,
    e.g. the next trial in a reused Tune actor); a process using the driver's service
    (``join_service``) only disconnects. A run left open there would stay "in use"
    in the driver's service, and the trial's retry could not take its id again.

    W&B stops its service in an ``atexit`` hook, but a Ray worker that exits kills
    its child processes first, the service among them: the hook then fails with a
    "Connection lost" traceback in the worker's log. Stopping it while the worker
    still runs leaves the hook nothing to do."""
    if "wandb" not in sys.modules:  # never imported here: no service to stop
        return
    import wandb

    for run in list(_OPEN):
        run.finish(exit_code=1 if failed else 0)
        _OPEN.discard(run)

    wandb.teardown()
