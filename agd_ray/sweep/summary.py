"""The closing table of a sweep: per architecture (tuning group), AGD's single run
against the best of each baseline's grid, and the compute each spent."""

from __future__ import annotations

import math
from dataclasses import dataclass

SELECT_BY = "val_loss"
"""A baseline's best of grid is the run with the lowest validation loss; its test
metrics are what is reported (tuning on the test split would flatter it)."""


@dataclass
class Entry:
    """One optimizer in one group: its best run, and what its whole grid cost."""

    optimizer: str
    trial_id: str | None  # the chosen run
    selected_by: str  # the column that chose it: val_loss (test_loss without a val split)
    val_loss: float | None
    test_loss: float | None
    best_acc: float | None  # the chosen run's test accuracy
    best_setting: str  # e.g. "lr=0.001" (empty for AGD)
    runs: int
    samples: int
    compute: float  # 6 x params x samples (language models: tokens), summed over the grid
    wall_s: float
    diverged: int
    stopped: int = 0  # by ASHA or SHA: their compute counts, they are not chosen


def select_best(runs: list[dict]) -> tuple[dict | None, str]:
    """(the completed run with the lowest validation loss, ``"val_loss"``); runs
    without a validation split fall back to test loss, and say so."""
    done = [r for r in runs if r["status"] == "completed"]
    key = SELECT_BY if any(_finite(r.get(SELECT_BY)) for r in done) else "test_loss"
    best = min((r for r in done if _finite(r.get(key))), key=lambda r: r[key], default=None)
    return best, key


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def summarise(rows: list[dict], agd: str = "agd") -> dict[str, list[Entry]]:
    """{group: [AGD's entry, then one per baseline]} from trials.parquet rows
    (finished trials only: completed, diverged, or stopped early by ASHA or SHA)."""
    by_group: dict[str, dict[str, list[dict]]] = {}
    for row in rows:
        if row["status"] in ("completed", "diverged", "stopped"):
            by_group.setdefault(row["group"], {}).setdefault(row["optimizer.name"], []).append(row)

    table = {}
    for group, optimizers in by_group.items():
        entries = []
        for name in sorted(optimizers, key=lambda n: (n != agd, n)):
            runs = optimizers[name]
            best, key = select_best(runs)
            lr = best.get("optimizer.lr") if best else None
            entries.append(
                Entry(
                    optimizer=name,
                    trial_id=best["trial_id"] if best else None,
                    selected_by=key,
                    val_loss=best.get("val_loss") if best else None,
                    test_loss=best.get("test_loss") if best else None,
                    best_acc=best["test_acc"] if best else None,
                    best_setting=f"lr={lr:g}" if _finite(lr) else "",
                    runs=len(runs),
                    samples=int(sum(r["samples"] or 0 for r in runs)),
                    compute=sum(6.0 * (r["params"] or 0) * _processed(r) for r in runs),
                    wall_s=float(sum(r["wall_s"] or 0.0 for r in runs)),
                    diverged=sum(1 for r in runs if r["status"] == "diverged"),
                    stopped=sum(1 for r in runs if r["status"] == "stopped"),
                )
            )
        table[group] = entries
    return table


def summary_from_trials(trials) -> dict[str, list[Entry]]:
    """The table from a trials DataFrame (``agd-ray report``)."""
    rows = trials.astype(object).where(trials.notna(), None).to_dict("records")
    return summarise(rows)


def format_summary(table: dict[str, list[Entry]]) -> str:
    if not table:
        return "no finished trials"
    names = {g: short_group(g) for g in table}
    w = max(len("group"), *map(len, names.values()))
    o = max(len("optimizer"), *(len(e.optimizer) for entries in table.values() for e in entries))
    keys = {e.selected_by for entries in table.values() for e in entries}
    lines = [
        f"best of grid chosen by {' / '.join(sorted(keys))}, scored on the test split",
        f"{'group':<{w}} {'optimizer':<{o}} {'val_loss':>8} {'test_loss':>9} {'test_acc':>8} "
        f"{'best of grid':<13} {'runs':>4} {'samples':>11} {'wall_s':>8}",
    ]

    def num(v, width):
        return f"{v:>{width}.4f}" if _finite(v) else f"{'-':>{width}}"

    for group, entries in sorted(table.items(), key=lambda item: group_order(item[0])):
        for i, e in enumerate(entries):
            notes = [f"{e.diverged} diverged"] * bool(e.diverged)
            notes += [f"{e.stopped} stopped early"] * bool(e.stopped)
            div = f" ({', '.join(notes)})" if notes else ""
            lines.append(
                f"{names[group] if i == 0 else '':<{w}} {e.optimizer:<{o}} {num(e.val_loss, 8)} "
                f"{num(e.test_loss, 9)} {num(e.best_acc, 8)} {e.best_setting:<13} "
                f"{e.runs:>4} {e.samples:>11,} {e.wall_s:>8.1f}{div}"
            )
    return "\n".join(lines)


def group_order(group: str) -> tuple:
    """Sort key of a tuning group: its values in order, numbers as numbers."""

    def value(text: str):
        try:
            return (0, float(text), "")
        except ValueError:
            return (1, 0.0, text)

    return tuple(value(item.partition("=")[2]) for item in group.split(";"))


def short_group(group: str) -> str:
    """``model.depth=2;train.batch_size=64;seed=0`` -> ``depth=2 batch_size=64 seed=0``."""
    parts = []
    for item in group.split(";"):
        key, _, value = item.partition("=")
        parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    return " ".join(parts)


def _processed(row: dict) -> float:
    """What a run's compute counts per weight: its samples, or (language models) its
    tokens, each a prediction that costs a forward and a backward pass."""
    tokens = row.get("tokens")
    return float(tokens if tokens is not None and tokens == tokens else row["samples"] or 0)
