"""The headline's sentences: each tuned baseline against AGD's untuned run, as the
console, report.html and the W&B report print them (the numbers: ``compare.headline``)."""

from __future__ import annotations

import math

import pandas as pd

from agd_ray.analysis.compare import AGD
from agd_ray.analysis.fits import MIN_SEEDS
from agd_ray.analysis.grid_edge import edge_text
from agd_ray.sweep.summary import SELECT_BY


def each_seed(c: dict) -> str:
    """Each seed's own multiplier, in order: "0.59, never"."""
    return ", ".join("never" if m is None else f"{m:.2g}" for m in c["per_seed"].values())


def chosen(best: pd.DataFrame, optimizer: str) -> str:
    """How ``optimizer``'s points in ``best`` were chosen, for a legend or a title:
    "untuned" (AGD), "best of grid by val loss" or "one run" (a baseline without a
    grid, e.g. Prodigy at its default)."""
    if optimizer == AGD:
        return "untuned"
    rows = best[best["optimizer.name"] == optimizer]
    if "runs" in rows and not rows.empty and rows["runs"].median() <= 1:  # as the headline
        return "one run"
    by = rows["selected_by"].iloc[0] if "selected_by" in rows and not rows.empty else SELECT_BY
    return f"best of grid by {str(by).replace('_', ' ')}"


def spread(c: dict) -> str:
    """How sure the compute multiplier ``c`` (``compare.compute_multiplier``) is: its
    95 % interval over seeds, or each seed's own value and why there is no interval."""
    if c["multiplier_ci"]:
        lo, hi = c["multiplier_ci"]
        upper = "never" if hi == math.inf else f"{hi:.2g}"
        return f" (95 % CI over {c['n_seeds']} seeds {lo:.2g} to {upper})"
    if c.get("per_seed"):
        why = (
            f"{c['n_seeds']} seeds are too few for an interval, {MIN_SEEDS} or more give a 95 % one"
            if c["n_seeds"] < MIN_SEEDS
            else "no interval: no resample of the seeds reaches it"
        )
        return f" (on the curves averaged over seeds; each seed alone: {each_seed(c)}; {why})"
    if c.get("n_seeds") == 1:
        return f" (one seed: no interval; {MIN_SEEDS} or more seeds give a 95 % one)"
    return ""


def over(row: dict) -> str:
    """What the headline's means are over: "12 settings of depth, width, batch_size x
    1 seed" (the swept keys named; a study that sweeps none has one setting)."""
    n, seeds, keys = row["architectures"], row["seeds"], row.get("swept") or []
    of = f" of {', '.join(keys)}" if keys else ""
    return f"{n} setting{'s' if n != 1 else ''}{of} x {seeds} seed{'s' if seeds != 1 else ''}"


def headline_text(row: dict) -> str:
    """One sentence a reader can quote: a row of ``compare.headline``."""
    c = row["compute"]
    metric = c["metric"].replace("_", " ")
    runs = row["grid_runs"]
    if c["multiplier"] is None:
        where = "within its grid it" if runs > 1 else "it"
        cost = f"{where} never reaches AGD's best {metric} ({c['agd_best_loss']:.4g})"
    else:
        grid = ", tuning grid included" if runs > 1 else ""
        cost = (
            f"reaching AGD's best {metric} ({c['agd_best_loss']:.4g}) costs it "
            f"{c['multiplier']:.2g}x AGD's compute{grid}{spread(c)}"
        )
    edge = edge_text(row.get("at_edge", {}), row["groups"])
    grid = f"best of {runs} runs, chosen on {row['selected_by']}" if runs > 1 else "one run"
    if row.get("language"):
        gap = ""
        if row.get("widest") is not None:
            pct = row["widest_val_gap_pct"]
            side = "above" if pct > 0 else "below"
            gap = (
                f"; at the largest width ({row['widest']}) AGD's validation loss is "
                f"{abs(pct):.1f} % {side} the baseline's"
            )
        return (
            f"{row['baseline']} ({grid}, scored on test): test loss "
            f"{row['baseline_test_loss']:.4g} nats per token ({row['baseline_test_bits']:.3g} "
            f"bits) against AGD's {row['agd_test_loss']:.4g} ({row['agd_test_bits']:.3g} bits) "
            f"(means over {over(row)}; AGD's lower in {row['agd_wins']} of "
            f"{row['groups']}){gap}{edge}; {cost}."
        )
    return (
        f"{row['baseline']} ({grid}, scored on test): test accuracy "
        f"{100 * row['baseline_test_acc']:.1f} % against AGD's "
        f"{100 * row['agd_test_acc']:.1f} %, test loss {row['baseline_test_loss']:.4g} against "
        f"{row['agd_test_loss']:.4g} (means over {over(row)}; AGD's test loss lower in "
        f"{row['agd_wins']} of {row['groups']}){edge}; "
        f"{cost}."
    )
