"""The closing table of a sweep: per architecture (tuning group), AGD's single run
against the best of each baseline's grid, and the compute each spent."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Entry:
    """One optimizer in one group: its best run, and what its whole grid cost."""

    optimizer: str
    best_acc: float | None
    best_setting: str  # e.g. "lr=0.001" (empty for AGD)
    runs: int
    samples: int
    wall_s: float
    diverged: int


def summarise(rows: list[dict], agd: str = "agd") -> dict[str, list[Entry]]:
    """{group: [AGD's entry, then one per baseline]} from trials.parquet rows
    (finished trials only: completed or diverged)."""
    by_group: dict[str, dict[str, list[dict]]] = {}
    for row in rows:
        if row["status"] in ("completed", "diverged"):
            by_group.setdefault(row["group"], {}).setdefault(row["optimizer.name"], []).append(row)

    table = {}
    for group, optimizers in by_group.items():
        entries = []
        for name in sorted(optimizers, key=lambda n: (n != agd, n)):
            runs = optimizers[name]
            finished = [r for r in runs if r["status"] == "completed" and r["test_acc"] is not None]
            best = max(finished, key=lambda r: r["test_acc"], default=None)
            lr = best.get("optimizer.lr") if best else None
            entries.append(
                Entry(
                    optimizer=name,
                    best_acc=best["test_acc"] if best else None,
                    best_setting=f"lr={lr:g}" if lr is not None and lr == lr else "",
                    runs=len(runs),
                    samples=int(sum(r["samples"] or 0 for r in runs)),
                    wall_s=float(sum(r["wall_s"] or 0.0 for r in runs)),
                    diverged=sum(1 for r in runs if r["status"] == "diverged"),
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
    lines = [
        f"{'group':<{w}} {'optimizer':<9} {'test_acc':>8} {'best of grid':<13} "
        f"{'runs':>4} {'samples':>11} {'wall_s':>8}"
    ]
    for group, entries in sorted(table.items()):
        for i, e in enumerate(entries):
            acc = f"{e.best_acc:.4f}" if e.best_acc is not None else "-"
            div = f" ({e.diverged} diverged)" if e.diverged else ""
            lines.append(
                f"{names[group] if i == 0 else '':<{w}} {e.optimizer:<9} {acc:>8} "
                f"{e.best_setting:<13} {e.runs:>4} {e.samples:>11,} {e.wall_s:>8.1f}{div}"
            )
    return "\n".join(lines)


def short_group(group: str) -> str:
    """``model.depth=2;train.batch_size=64;seed=0`` -> ``depth=2 batch_size=64 seed=0``."""
    parts = []
    for item in group.split(";"):
        key, _, value = item.partition("=")
        parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    return " ".join(parts)
