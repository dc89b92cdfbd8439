"""Result files: ``trials.parquet`` (one row per trial) and ``epochs.parquet`` (one row
per trial per epoch), written atomically (write, then rename) with pyarrow."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# Columns of trials.parquet besides the config-key columns (dotted names).
TRIAL_COLUMNS = {
    "trial_id": pa.string(),
    "status": pa.string(),
    "group": pa.string(),
    "optimizer.name": pa.string(),
    "seed": pa.int64(),
    "params": pa.int64(),
    "train_loss": pa.float64(),
    "train_acc": pa.float64(),
    "test_loss": pa.float64(),
    "test_acc": pa.float64(),
    "steps": pa.int64(),
    "samples": pa.int64(),
    "wall_s": pa.float64(),
}

EPOCH_COLUMNS = {
    "trial_id": pa.string(),
    "epoch": pa.int64(),
    "step": pa.int64(),
    "train_loss": pa.float64(),
    "train_acc": pa.float64(),
    "test_loss": pa.float64(),
    "test_acc": pa.float64(),
    "eta_mean": pa.float64(),
    "eta_min": pa.float64(),
    "eta_max": pa.float64(),
    "wall_s": pa.float64(),
    "samples_per_s": pa.float64(),
}

_FINAL_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


def trial_row(
    trial_id: str,
    status: str,
    group: str,
    config_columns: dict[str, Any],
    optimizer: str,
    seed: int,
    params: int | None,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """A trials.parquet row: final metrics from the last epoch, compute from the history."""
    last = history[-1] if history else {}
    return {
        "trial_id": trial_id,
        "status": status,
        "group": group,
        **config_columns,
        "optimizer.name": optimizer,
        "seed": seed,
        "params": params,
        **{k: last.get(k) for k in _FINAL_METRICS},
        "steps": last.get("step", 0),
        "samples": last.get("samples", 0),
        "wall_s": last.get("wall_s", 0.0),
    }


def epoch_rows(trial_id: str, history: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"trial_id": trial_id, **{k: h.get(k) for k in EPOCH_COLUMNS if k != "trial_id"}}
        for h in history
    ]


def trials_table(rows: list[dict[str, Any]]) -> pa.Table:
    config_cols = sorted({k for r in rows for k in r if k not in TRIAL_COLUMNS})
    fields = [
        pa.field(k, t) for k, t in TRIAL_COLUMNS.items() if k in ("trial_id", "status", "group")
    ]
    names = [f.name for f in fields]
    table = pa.Table.from_pylist(rows)  # infers the config columns' types
    fields += [table.schema.field(k) for k in config_cols]
    fields += [pa.field(k, t) for k, t in TRIAL_COLUMNS.items() if k not in names]
    schema = pa.schema(fields)
    return pa.Table.from_pylist(rows, schema=schema)


def epochs_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=pa.schema(EPOCH_COLUMNS))


def write_atomic(table: pa.Table, path: str | Path) -> Path:
    """Write ``table`` to ``path`` via a temporary file and a rename: readers and
    crashes never see a half-written Parquet file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path
