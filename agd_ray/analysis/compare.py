"""AGD's single run against each tuned baseline: the best of each grid (chosen on the
validation split, scored on test), compute-optimal frontiers with the tuning grid's
compute included, the compute multiplier, and learning-rate transfer across width.

Compute is 6 x params x samples (forward + backward FLOPs of a dense network; for
a language model 6 x params x tokens). A
tuned baseline's compute at an architecture point is its whole grid's: after each
epoch, the grid has spent the sum over its runs and knows the lowest validation loss
among them. AGD's is its one run's.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from agd_ray.analysis.fits import MIN_SEEDS
from agd_ray.analysis.grid_edge import edge_counts, same, tried
from agd_ray.sweep.summary import SELECT_BY, summary_from_trials

AGD = "agd"


def swept_keys(group: str) -> list[str]:
    """The config keys a tuning group is made of (its seed excluded)."""
    return [item.partition("=")[0] for item in group.split(";") if not item.startswith("seed=")]


def arch_of(group: str) -> str:
    """The architecture point of a tuning group: the group without its seed."""
    return ";".join(item for item in group.split(";") if not item.startswith("seed="))


def arch_keys(arch: str) -> list[tuple[str, str]]:
    """``model.depth=4;model.arch="resnet"`` -> [("depth", "4"), ("arch", "resnet")]
    (values as JSON text, unquoted; none for a study that sweeps no key)."""
    items = (item.partition("=") for item in filter(None, arch.split(";")))
    return [(key.rsplit(".", 1)[-1], value.strip('"')) for key, _, value in items]


def _varied(groups) -> list[str]:
    """The keys (short names) that take more than one value over ``groups``."""
    values: dict[str, set] = {}
    for group in groups:
        for key, value in arch_keys(arch_of(group)):
            values.setdefault(key, set()).add(value)
    return [k for k, v in values.items() if len(v) > 1]


def selection_metric(frame: pd.DataFrame) -> str:
    """What a best of grid is chosen on: the validation loss, or the test loss for a
    sweep without a validation split."""
    return SELECT_BY if frame[SELECT_BY].notna().any() else "test_loss"


def best_of_grid(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (tuning group, optimizer): the chosen run (lowest validation loss;
    AGD's only run) with its test metrics, and what the whole grid consumed."""
    rows = []
    for group, entries in summary_from_trials(trials).items():
        for e in entries:
            rows.append(
                {
                    "group": group,
                    "optimizer.name": e.optimizer,
                    "trial_id": e.trial_id,
                    "selected_by": e.selected_by,
                    "val_loss": e.val_loss,
                    "test_loss": e.test_loss,
                    "test_acc": e.best_acc,
                    "runs": e.runs,
                    "grid_samples": e.samples,
                    "grid_compute": e.compute,
                }
            )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table.dropna(subset=["trial_id"])
    extra = [c for c in trials.columns if c not in table.columns or c == "trial_id"]
    chosen = trials[extra].drop_duplicates("trial_id")
    return table.merge(chosen, on="trial_id", how="left").reset_index(drop=True)


def curves(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per (optimizer, group, epoch): the grid's compute so far and its best
    validation loss (test loss for sweeps without a validation split)."""
    metric = selection_metric(epochs)
    info = trials.set_index("trial_id")[["group", "optimizer.name", "seed", "params", "samples"]]
    runs = epochs.merge(info, left_on="trial_id", right_index=True, suffixes=("", "_final")).dropna(
        subset=["params"]
    )
    if "samples" not in epochs or runs["samples"].isna().all():  # files before 0.2
        runs["samples"] = (
            runs["samples_final"] * runs["step"] / runs.groupby("trial_id")["step"].transform("max")
        )
    language = "tokens" in runs and runs["tokens"].notna().any()
    processed = runs["tokens"] if language else runs["samples"]  # per prediction
    runs["compute"] = 6.0 * runs["params"].astype(float) * processed.astype(float)
    out = []
    for (optimizer, group), grid in runs.groupby(["optimizer.name", "group"]):
        compute = grid.pivot_table(index="epoch", columns="trial_id", values="compute")
        loss = grid.pivot_table(index="epoch", columns="trial_id", values=metric)
        loss = loss.where(np.isfinite(loss))
        # a run that stopped early (diverged) has still spent its compute
        compute = compute.reindex(range(int(compute.index.max()) + 1)).ffill()
        loss = loss.reindex(compute.index)
        out.append(
            pd.DataFrame(
                {
                    "optimizer.name": optimizer,
                    "group": group,
                    "arch": arch_of(group),
                    "seed": int(grid["seed"].iloc[0]),
                    "epoch": compute.index,
                    "compute": compute.sum(axis=1).to_numpy(),
                    "loss": loss.min(axis=1).to_numpy(),
                }
            )
        )
    table = pd.concat(out, ignore_index=True) if out else pd.DataFrame()
    table.attrs["metric"] = metric
    return table


def frontier(points: pd.DataFrame, seeds: list[int] | None = None) -> tuple:
    """(compute, loss) of the lower envelope of loss against compute, from curves
    averaged over ``seeds`` (all by default; a list with repeats weights them)."""
    if seeds is not None:
        points = pd.concat([points[points["seed"] == s] for s in seeds])
    mean = points.groupby(["arch", "epoch"])[["compute", "loss"]].mean().dropna()
    mean = mean.sort_values("compute")
    c, loss = mean["compute"].to_numpy(), mean["loss"].to_numpy()
    keep = loss < np.minimum.accumulate(np.r_[np.inf, loss[:-1]])  # strict improvements
    return c[keep], loss[keep]


def reach(c: np.ndarray, loss: np.ndarray, target: float) -> float | None:
    """The compute at which a frontier first gets to ``target`` (log-linear between
    its points), or None if it never does."""
    hit = np.flatnonzero(loss <= target)
    if not len(hit):
        return None
    i = hit[0]
    if i == 0 or loss[i] == target:
        return float(c[i])
    t = (loss[i - 1] - target) / (loss[i - 1] - loss[i])
    return float(np.exp(np.log(c[i - 1]) + t * (np.log(c[i]) - np.log(c[i - 1]))))


def multiplier(points: pd.DataFrame, baseline: str, seeds=None) -> tuple[float | None, float]:
    """(baseline's compute to reach AGD's best loss / AGD's compute for it, or None
    when the baseline never gets there; AGD's best loss)."""
    c_agd, l_agd = frontier(points[points["optimizer.name"] == AGD], seeds)
    c_base, l_base = frontier(points[points["optimizer.name"] == baseline], seeds)
    if not len(l_agd) or not len(l_base):
        return None, math.nan
    target = float(l_agd[-1])
    needed = reach(c_base, l_base, target)
    return (needed / float(c_agd[-1]) if needed is not None else None), target


def compute_multiplier(points: pd.DataFrame, baseline: str, n_boot: int = 200) -> dict:
    """The headline: how many times AGD's compute the tuned baseline (grid included)
    spends to reach AGD's best validation loss (on curves averaged over seeds).

    With several seeds, each seed's own multiplier too (None: never reaches it); with
    at least ``MIN_SEEDS`` (as for the fits), a 95 % bootstrap interval over seeds.
    Fewer seeds have too few distinct resamples (3 for 2 seeds) for an interval that
    covers 95 %: the seeds' own values are reported instead."""
    value, target = multiplier(points, baseline)
    # seeds where both ran: one without AGD's (or the baseline's) curve has no multiplier
    ran = [set(points.loc[points["optimizer.name"] == o, "seed"]) for o in (AGD, baseline)]
    seeds = sorted(ran[0] & ran[1])
    result = {
        "baseline": baseline,
        "metric": points.attrs.get("metric", SELECT_BY),
        "agd_best_loss": target,
        "multiplier": value,
        "reaches": value is not None,
        "multiplier_ci": None,
        "n_seeds": len(seeds),
        "per_seed": None,
    }
    if len(seeds) >= 2:
        result["per_seed"] = {int(s): multiplier(points, baseline, [s])[0] for s in seeds}
    if len(seeds) >= MIN_SEEDS and value is not None:
        rng = np.random.default_rng(0)
        draws = [
            multiplier(points, baseline, list(rng.choice(seeds, len(seeds))))[0]
            for _ in range(n_boot)
        ]
        never = sum(d is None for d in draws) / n_boot
        finite = np.log([d for d in draws if d is not None])
        result["never_fraction"] = never
        if len(finite):  # else no resample reaches it: the seeds' own values say so
            lo = float(np.exp(np.percentile(finite, 2.5)))
            hi = float(np.exp(np.percentile(finite, 97.5))) if never <= 0.025 else math.inf
            result["multiplier_ci"] = [lo, hi]
    return result


def lr_transfer(trials: pd.DataFrame, baseline: str) -> list[dict]:
    """Per setting of the other swept keys: the learning rate with the lowest mean
    validation loss at each width, and its shift per doubling of width (the slope
    of log2 lr against log2 width; 0 means the best learning rate transfers)."""
    runs = trials[(trials["optimizer.name"] == baseline) & (trials["status"] == "completed")]
    if runs.empty or "optimizer.lr" not in runs or runs["optimizer.lr"].nunique() < 2:
        return []
    ended = tried(trials[trials["optimizer.name"] == baseline])  # diverged ones too
    metric = selection_metric(runs)
    held = [k for k in swept_keys(runs["group"].iloc[0]) if k not in ("model.width",)]
    held = [k for k in held if k in runs and k != "optimizer.lr"]
    out = []
    for fixed, rows in runs.groupby(held, dropna=False) if held else [((), runs)]:
        fixed = fixed if isinstance(fixed, tuple) else (fixed,)
        mean = rows.groupby(["model.width", "optimizer.lr"])[metric].mean().dropna()
        best = {int(w): float(s.idxmin()[1]) for w, s in mean.groupby(level=0)}
        entry = {
            "held_fixed": dict(zip(held, fixed, strict=True)),  # JSON-ready in report.build
            "best_lr_per_width": {str(w): lr for w, lr in sorted(best.items())},
            "lr_grid": sorted(float(v) for v in rows["optimizer.lr"].unique()),
            "log2_lr_shift_per_width_doubling": None,
        }  # a best lr at its width's grid's edge: the true best may lie beyond it
        here = ended
        for key, value in zip(held, fixed, strict=True):
            here = here[same(here[key], value)]
        lrs = here.groupby("model.width")["optimizer.lr"]
        ends = {int(w): (float(v.min()), float(v.max())) for w, v in lrs}
        entry["best_at_grid_edge"] = [str(w) for w, lr in best.items() if lr in ends.get(w, ())]
        if len(best) >= 2:
            w = np.log2(list(best))
            entry["log2_lr_shift_per_width_doubling"] = float(
                np.polyfit(w, np.log2(list(best.values())), 1)[0]
            )
        out.append(entry)
    return out


def headline(best: pd.DataFrame, points: pd.DataFrame) -> list[dict]:
    """Per baseline: AGD's test accuracy and loss against the baseline's best of
    grid over the groups both have, wins, and the compute multiplier."""
    agd = best[best["optimizer.name"] == AGD].set_index("group")
    rows = []
    for baseline in sorted(set(best["optimizer.name"]) - {AGD}):
        base = best[best["optimizer.name"] == baseline].set_index("group")
        both = agd.index.intersection(base.index)
        if not len(both):
            continue
        a, b = agd.loc[both], base.loc[both]
        rows.append(
            {
                "baseline": baseline,
                "groups": len(both),
                "architectures": len({arch_of(g) for g in both}),
                "swept": _varied(both),
                "seeds": len({g.rsplit("seed=", 1)[-1] for g in both}),
                "grid_runs": int(b["runs"].median()),
                "selected_by": str(b["selected_by"].iloc[0]),
                "agd_test_acc": float(a["test_acc"].mean()),
                "baseline_test_acc": float(b["test_acc"].mean()),
                "agd_test_loss": float(a["test_loss"].mean()),
                "baseline_test_loss": float(b["test_loss"].mean()),
                "agd_wins": int((a["test_loss"] < b["test_loss"]).sum()),
                "at_edge": edge_counts(b),  # chosen at its grid's lowest or highest value
                "compute": compute_multiplier(points, baseline),
                **_language_terms(a, b),
            }
        )
    return rows


def _language_terms(agd: pd.DataFrame, base: pd.DataFrame) -> dict:
    """For language models: test bits per token of both, and AGD's validation loss
    relative to the baseline's best at the largest width (the study's goal)."""
    if "tokens" not in agd or agd["tokens"].isna().all():
        return {"language": False}
    out = {
        "language": True,
        "agd_test_bits": float(agd["test_bits"].mean()),
        "baseline_test_bits": float(base["test_bits"].mean()),
    }
    if "model.width" in agd and agd["model.width"].notna().any():
        widest = agd["model.width"] == agd["model.width"].max()
        ratio = agd.loc[widest, "val_loss"] / base.loc[widest.to_numpy(), "val_loss"].to_numpy()
        out["widest"] = int(agd["model.width"].max())
        out["widest_val_gap_pct"] = float(100 * (ratio.mean() - 1))
    return out
