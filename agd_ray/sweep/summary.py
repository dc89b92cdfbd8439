"""The closing table of a sweep: per architecture (tuning group), AGD's single run
against the best of each baseline's grid, and the compute each spent."""

from __future__ import annotations

from dataclasses import dataclass

from agd_ray.sweep.grid import TrialSpec
from agd_ray.train.trainer import TrialOutcome


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


def summarise(
    specs: list[TrialSpec], outcomes: dict[str, TrialOutcome], agd: str = "agd"
) -> dict[str, list[Entry]]:
    """{group: [AGD's entry, then one per baseline]} over finished trials."""
    by_group: dict[str, dict[str, list[tuple[TrialSpec, TrialOutcome]]]] = {}
    for spec in specs:
        outcome = outcomes.get(spec.trial_id)
        if outcome is None or outcome.status not in ("completed", "diverged"):
            continue
        by_group.setdefault(spec.group, {}).setdefault(spec.optimizer, []).append((spec, outcome))

    table = {}
    for group, optimizers in by_group.items():
        entries = []
        for name in sorted(optimizers, key=lambda n: (n != agd, n)):
            runs = optimizers[name]
            finished = [(s, o) for s, o in runs if o.status == "completed" and o.history]
            best = max(finished, key=lambda so: so[1].history[-1]["test_acc"], default=None)
            setting = ""
            if best is not None:
                opt = best[0].config["optimizer"]
                setting = f"lr={opt['lr']:g}" if opt.get("lr") is not None else ""
            entries.append(
                Entry(
                    optimizer=name,
                    best_acc=best[1].history[-1]["test_acc"] if best else None,
                    best_setting=setting,
                    runs=len(runs),
                    samples=sum(o.history[-1]["samples"] for _, o in runs if o.history),
                    wall_s=sum(o.history[-1]["wall_s"] for _, o in runs if o.history),
                    diverged=sum(1 for _, o in runs if o.status == "diverged"),
                )
            )
        table[group] = entries
    return table


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
