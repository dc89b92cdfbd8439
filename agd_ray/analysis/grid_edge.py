"""Is a tuned baseline's best of grid at the edge of its grid?

A baseline whose chosen learning rate (or any tuned value) is its grid's lowest or
highest may do better outside the grid: the comparison with AGD's untuned run then
flatters AGD, and the report says so. A tuned key is one whose value varies among
the grid's runs (every run of the tuning group, stopped and diverged ones included:
a diverged run above the chosen one shows that the grid did look higher).
"""

from __future__ import annotations

import pandas as pd

TUNED = "optimizer."  # the keys a baseline's grid sweeps live under optimizer.*


def grid_edges(trials: pd.DataFrame, best: pd.DataFrame) -> pd.Series:
    """Per row of ``best`` (``compare.best_of_grid``): the tuned keys whose chosen
    value is the grid's lowest or highest, e.g. ``"lr=highest"`` ("" inside the grid,
    or no grid)."""
    keys = [c for c in trials.columns if c.startswith(TUNED) and c != "optimizer.name"]
    runs = trials.groupby(["group", "optimizer.name"])
    out = []
    for _, row in best.iterrows():
        grid = runs.get_group((row["group"], row["optimizer.name"]))
        edges = []
        for key in keys:
            values = pd.to_numeric(grid[key], errors="coerce").dropna().unique()
            chosen = pd.to_numeric(pd.Series([row.get(key)]), errors="coerce").iloc[0]
            if len(values) < 2 or pd.isna(chosen):
                continue
            name = key.removeprefix(TUNED)
            if chosen == values.max():
                edges.append(f"{name}=highest")
            elif chosen == values.min():
                edges.append(f"{name}=lowest")
        out.append(", ".join(edges))
    return pd.Series(out, index=best.index, dtype=object)


def edge_counts(chosen: pd.DataFrame) -> dict[str, int]:
    """How often each edge was chosen, over a baseline's rows of ``best`` (with its
    ``grid_edge`` column): e.g. {"lr=highest": 3}."""
    counts: dict[str, int] = {}
    for edges in chosen.get("grid_edge", pd.Series(dtype=object)).dropna():
        for edge in filter(None, edges.split(", ")):
            counts[edge] = counts.get(edge, 0) + 1
    return counts


def edge_text(counts: dict[str, int], groups: int) -> str:
    """The headline's clause for a baseline chosen at its grid's edge ("" if never)."""
    if not counts:
        return ""
    where = ", ".join(f"{edge.replace('=', ' ')} in {n}" for edge, n in sorted(counts.items()))
    return (
        f"; the chosen value is at its grid's edge ({where} of {groups}): "
        "the grid may not hold the baseline's best"
    )
