"""Result files: ``trials.parquet`` (one row per trial) and ``epochs.parquet`` (one row
per trial per epoch), written atomically (write, then rename) with pyarrow."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from agd_ray.storage import RunPaths
    from agd_ray.trial import TrialOutcome, TrialSpec

# Columns of trials.parquet besides the config-key columns (dotted names).
_FINAL_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
"""The metrics of an epoch, and (those of the last epoch) of a trial, in this order."""

# Language models' columns (null for image models): bits per token (per byte on a
# byte-level corpus) of the validation and test loss, and tokens trained on.
LANGUAGE_FINAL = {"val_bits": pa.float64(), "test_bits": pa.float64(), "tokens": pa.int64()}

TRIAL_COLUMNS = {
    "trial_id": pa.string(),
    "status": pa.string(),
    "group": pa.string(),
    "optimizer.name": pa.string(),
    "seed": pa.int64(),
    "params": pa.int64(),
    **dict.fromkeys(_FINAL_METRICS, pa.float64()),
    "steps": pa.int64(),
    "samples": pa.int64(),
    "wall_s": pa.float64(),
    **LANGUAGE_FINAL,
    "diverged_epoch": pa.int64(),  # where a diverged trial first met a non-finite
    "diverged_step": pa.int64(),  # loss or weight (null otherwise)
}

EPOCH_COLUMNS = {
    "trial_id": pa.string(),
    "epoch": pa.int64(),
    "step": pa.int64(),
    "samples": pa.int64(),
    "batch_size": pa.int64(),
    **dict.fromkeys(_FINAL_METRICS, pa.float64()),
    "test_acc5": pa.float64(),
    "eta_mean": pa.float64(),
    "eta_min": pa.float64(),
    "eta_max": pa.float64(),
    "noise_scale": pa.float64(),
    "wall_s": pa.float64(),
    "samples_per_s": pa.float64(),
    **LANGUAGE_FINAL,
    "tokens_per_s": pa.float64(),
}


def trial_row(spec: TrialSpec, outcome: TrialOutcome | None) -> dict[str, Any]:
    """A trials.parquet row: final metrics from the last epoch, compute from the history.
    A trial with no outcome yet (interrupted) is ``failed`` with no metrics."""
    history = outcome.history if outcome else []
    last = history[-1] if history else {}
    return {
        "trial_id": spec.trial_id,
        "status": outcome.status if outcome else "failed",
        "group": spec.group,
        **spec.columns,
        "optimizer.name": spec.optimizer,
        "seed": spec.seed,
        "params": outcome.params if outcome else None,
        **{k: last.get(k) for k in _FINAL_METRICS},
        "steps": last.get("step", 0),
        "samples": last.get("samples", 0),
        "wall_s": last.get("wall_s", 0.0),
        **{k: last.get(k) for k in LANGUAGE_FINAL},
        "diverged_epoch": last.get("epoch") if last.get("diverged_step") is not None else None,
        "diverged_step": last.get("diverged_step"),
    }


def epoch_rows(trial_id: str, history: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"trial_id": trial_id, **{k: h.get(k) for k in EPOCH_COLUMNS if k != "trial_id"}}
        for h in history
    ]


LANGUAGE_COLUMNS = (*LANGUAGE_FINAL, "tokens_per_s")


def _columns(columns: dict[str, pa.DataType], rows: list[dict[str, Any]]) -> dict:
    """``columns``, less the language models' when no row has any (image runs)."""
    if any(r.get("tokens") is not None for r in rows):
        return columns
    return {k: t for k, t in columns.items() if k not in LANGUAGE_COLUMNS}


def trials_table(rows: list[dict[str, Any]]) -> pa.Table:
    columns = _columns(TRIAL_COLUMNS, rows)
    config_cols = sorted({k for r in rows for k in r if k not in TRIAL_COLUMNS})
    fields = [pa.field(k, t) for k, t in columns.items() if k in ("trial_id", "status", "group")]
    names = [f.name for f in fields]
    table = pa.Table.from_pylist(rows)  # infers the config columns' types
    fields += [table.schema.field(k) for k in config_cols]
    fields += [pa.field(k, t) for k, t in columns.items() if k not in names]
    schema = pa.schema(fields)
    return pa.Table.from_pylist(rows, schema=schema)


def epochs_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=pa.schema(_columns(EPOCH_COLUMNS, rows)))


def write_atomic(table: pa.Table, path: str | Path) -> Path:
    """Write ``table`` to ``path`` via a temporary file and a rename: readers and
    crashes never see a half-written Parquet file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


PROVENANCE_KEY = b"agd_ray.provenance"
RESULT_FILES = ("trials.parquet", "epochs.parquet")


def write_results(
    entries: list[tuple[TrialSpec, TrialOutcome | None]],
    out_dir: str | Path,
    provenance: dict[str, Any] | None = None,
) -> None:
    """Rewrite OUT/<name>/trials.parquet and epochs.parquet from (spec, outcome) pairs,
    with ``provenance`` (``agd_ray.storage.provenance``) as JSON in each file's schema
    metadata under ``PROVENANCE_KEY``."""
    out_dir = Path(out_dir)
    rows = [trial_row(spec, outcome) for spec, outcome in entries]
    epochs = [r for spec, o in entries if o for r in epoch_rows(spec.trial_id, o.history)]
    meta = {PROVENANCE_KEY: json.dumps(provenance).encode()} if provenance else None
    for table, name in ((trials_table(rows), "trials"), (epochs_table(epochs), "epochs")):
        write_atomic(table.replace_schema_metadata(meta), out_dir / f"{name}.parquet")


def save_results(
    entries: list[tuple[TrialSpec, TrialOutcome | None]],
    paths: RunPaths,
    provenance: dict[str, Any],
) -> None:
    """``write_results`` into the run's out_dir, then copy the files to its home."""
    write_results(entries, paths.out_dir, provenance)
    paths.publish(*RESULT_FILES)


def read_provenance(path: str | Path) -> dict[str, Any] | None:
    """The provenance a result file was written with, if any."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[PROVENANCE_KEY]) if PROVENANCE_KEY in meta else None
