"""Is a tuned baseline's best of grid at the edge of its grid?

A baseline whose chosen learning rate (or any tuned value) is its grid's lowest or
highest may do better outside the grid: the comparison with AGD's untuned run then
flatters AGD, and the report says so.

A key's grid, for the chosen run, is the values it took among the tuning group's
runs of that optimizer that match the chosen run on every other ``optimizer.*``
key: so two entries of one optimizer (``sgd`` with momentum 0.9 over two learning
rates, ``sgd`` without over one) are two grids, and a product grid (lr x weight
decay) has an edge per axis. Runs count as tried when they ended (completed,
diverged or stopped early): a diverged run above the chosen one shows that the grid
did look higher; a failed or unfinished one does not. Numeric keys only (a
two-valued switch such as ``nesterov`` always sits at an "edge").
"""

from __future__ import annotations

import pandas as pd
from pandas.api.types import is_bool_dtype

from agd_ray.sweep.store import DONE

TUNED = "optimizer."  # the keys a baseline's grid sweeps live under optimizer.*


def same(column: pd.Series, value) -> pd.Series:
    """Which entries equal ``value`` (NaN equal to NaN)."""
    return column.isna() if pd.isna(value) else column == value


def _numeric(column: pd.Series) -> pd.Series | None:
    if is_bool_dtype(column.infer_objects()):
        return None
    values = pd.to_numeric(column, errors="coerce")
    return values if values.notna().any() else None


def tried(trials: pd.DataFrame) -> pd.DataFrame:
    """The runs that count as tried: they ended (completed, diverged, stopped)."""
    return trials[trials["status"].isin(DONE)] if "status" in trials else trials


def grid_edges(trials: pd.DataFrame, best: pd.DataFrame) -> pd.Series:
    """Per row of ``best`` (``compare.best_of_grid``): the tuned keys whose chosen
    value is its grid's lowest or highest, e.g. ``"lr=highest"`` ("" inside the
    grid, or no grid)."""
    keys = [c for c in trials.columns if c.startswith(TUNED) and c != "optimizer.name"]
    runs = tried(trials)
    out = []
    for _, row in best.iterrows():
        grid = runs[
            (runs["group"] == row["group"])
            & same(runs["optimizer.name"], row.get("optimizer.name"))
        ]
        edges = []
        for key in keys:
            values = _numeric(grid[key])
            chosen = pd.to_numeric(pd.Series([row.get(key)]), errors="coerce").iloc[0]
            if values is None or pd.isna(chosen):
                continue
            others = [k for k in keys if k != key]  # this run's own grid along key
            mine = pd.Series(True, index=grid.index)
            for other in others:
                mine &= same(grid[other], row.get(other))
            axis = values[mine].dropna().unique()
            if len(axis) < 2:
                continue
            name = key.removeprefix(TUNED)
            if chosen == axis.max():
                edges.append(f"{name}=highest")
            elif chosen == axis.min():
                edges.append(f"{name}=lowest")
        out.append(", ".join(edges))
    return pd.Series(out, index=best.index, dtype=object)


def edge_counts(chosen: pd.DataFrame) -> dict[str, int]:
    """Over a baseline's rows of ``best`` (with their ``grid_edge``): how many sit at
    an edge (``"settings"``), and how often each edge was chosen (``"lr=highest"``)."""
    edges = [e for e in chosen.get("grid_edge", pd.Series(dtype=object)).dropna() if e]
    counts: dict[str, int] = {"settings": len(edges)} if edges else {}
    for row in edges:
        for edge in row.split(", "):
            counts[edge] = counts.get(edge, 0) + 1
    return counts


def edge_where(counts: dict[str, int]) -> str:
    """Which edges, how often: "lr highest in 2, lam lowest in 1"."""
    return ", ".join(
        f"{edge.replace('=', ' ')} in {n}"
        for edge, n in sorted(counts.items())
        if edge != "settings"
    )


def edge_text(counts: dict[str, int], groups: int) -> str:
    """The headline's clause for a baseline chosen at its grid's edge ("" if never)."""
    if not counts:
        return ""
    return (
        f"; chosen at its grid's edge in {counts['settings']} of {groups} settings "
        f"({edge_where(counts)}): the grid may not hold the baseline's best"
    )
