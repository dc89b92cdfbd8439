"""Scaling figures: final loss against width, depth and parameter count with fitted
laws, the depth x width heatmap, and the batch-size study.

No law pools a confounder: a law against width is fitted once per setting of the
other swept keys (the legend names it), with the seeds as replicates. Each function
takes the report (``r.best``, ``r.trials``, ``r.epochs``, ``r.fits``, ``r.save``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import PercentFormatter

from agd_ray.analysis.compare import AGD, selection_metric, swept_keys
from agd_ray.analysis.fits import critical_batch, fit_power_law
from agd_ray.analysis.headline import chosen
from agd_ray.analysis.layout import panels
from agd_ray.analysis.plotting import (
    colour,
    errorbar,
    legend_below,
    log_ticks,
    plt,
    schedule_name,
    ticks_at,
)
from agd_ray.trial import value_text

AXES = {  # axis -> (column, label, keys it replaces in "held fixed")
    "width": ("model.width", "width", ("model.width",)),
    "depth": ("model.depth", "depth (weight layers)", ("model.depth",)),
    "params": ("params", "parameters", ("model.depth", "model.width")),
}


def held_fixed(rows: pd.DataFrame, drop: tuple[str, ...]) -> list[str]:
    """The swept keys other than ``drop`` (and baseline hyperparameters)."""
    keys = swept_keys(rows["group"].iloc[0]) if len(rows) else []
    return [k for k in keys if k not in drop and k in rows and not k.startswith("optimizer.")]


def by_setting(rows: pd.DataFrame, keys: list[str]):
    """(label naming the fixed values, their dict, rows) per setting of ``keys``."""
    if not keys:
        yield "", {}, rows
        return
    for values, part in rows.groupby(keys):
        values = values if isinstance(values, tuple) else (values,)
        fixed = {
            k: v.item() if hasattr(v, "item") else v for k, v in zip(keys, values, strict=True)
        }
        names = (
            schedule_name(v)
            if k == "train.batch_schedule"
            else f"{k.rsplit('.', 1)[-1]}={value_text(v)}"
            for k, v in fixed.items()
        )
        yield " ".join(names), fixed, part


def select_on_val(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per (x, seed), the row with the lowest validation loss (test loss for sweeps
    without a validation split): the frontier over the other swept keys
    without looking at the test split."""
    metric = selection_metric(rows)
    rows = rows.dropna(subset=[metric])
    return rows.loc[rows.groupby([column, "seed"])[metric].idxmin()]


def _seed_groups(x, y) -> dict:
    groups: dict = {}
    for xi, yi in zip(x, y, strict=True):
        groups.setdefault(float(xi), []).append(float(yi))
    return groups


def scaling(r, axis: str) -> None:
    column, label, drop = AXES[axis]
    best = r.best.dropna(subset=["test_loss"])
    if column not in best or best[column].nunique() < 3:
        return
    optimizers = [AGD] + sorted(set(best["optimizer.name"]) - {AGD})
    optimizers = [o for o in optimizers if o in set(best["optimizer.name"])]
    keys = held_fixed(best, drop)
    n_series = best.groupby(keys).ngroups + 1 if keys else 1
    height = 4.2 + 0.13 * n_series
    fig, axes = panels(len(optimizers), 6, height)
    fits: dict[str, list] = {}
    names = ", ".join(k.rsplit(".", 1)[-1] for k in keys)
    for ax, optimizer in zip(axes, optimizers, strict=True):
        rows = best[best["optimizer.name"] == optimizer]
        series = list(by_setting(rows, keys))
        if keys:  # the frontier: at each x and seed, the setting chosen on validation
            frontier = {"frontier": f"best {names} per {axis} and seed, chosen on val loss"}
            series.append((f"best {names} (by val loss)", frontier, select_on_val(rows, column)))
        for i, (name, fixed, part) in enumerate(series):
            fit = fit_power_law(part[column], part["test_loss"], part["seed"])
            fits.setdefault(optimizer, []).append({"held_fixed": fixed, **fit.to_dict()})
            name = name or "all"
            text = f"{name}: {fit.label()}" if fit.identified else f"{name}: no law ({fit.reason})"
            i = "k" if "frontier" in fixed else i
            groups = _seed_groups(part[column], part["test_loss"])
            frontier = "frontier" in fixed  # hollow squares: they sit on other series' points
            errorbar(ax, groups, text, i, "s" if frontier else "o", line=False, hollow=frontier)
            if fit.identified:
                xs = np.geomspace(part[column].min(), part[column].max(), 100)
                ax.plot(xs, fit.predict(xs), color=colour(i), lw=1.2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks_at(ax.xaxis, rows[column])
        log_ticks(ax.yaxis)
        ax.set_xlabel(label)
        ax.set_ylabel("final test loss")
        ax.set_title(f"{optimizer} ({chosen(r.best, optimizer)})", fontsize=10)
        legend_below(ax)
    r.fits[f"test_loss_vs_{axis}"] = fits
    fixed = ", ".join(k.rsplit(".", 1)[-1] for k in keys) or "nothing else"
    r.save(
        fig,
        f"scaling_{axis}.png",
        f"Final test loss against {label}, one series (colour) per setting of {fixed}, "
        f"and as black squares the frontier: at each {axis} and seed the setting with the lowest "
        "validation loss; means over seeds with their standard deviation. Fitted "
        "L = E + A x^-alpha (Huber loss on log residuals, bootstrap 95 % intervals, "
        "hold-out error at the largest x) where identified; series without a law are points only.",
    )


def heatmaps(r) -> None:
    agd = r.best[r.best["optimizer.name"] == AGD]
    if not (
        {"model.depth", "model.width"} <= set(agd)
        and agd["model.depth"].nunique() >= 2
        and agd["model.width"].nunique() >= 2
    ):
        return
    settings = list(by_setting(agd, held_fixed(agd, ("model.depth", "model.width"))))
    fig, axes = panels(len(settings), 5.4, 4)
    # accuracy, or (language models) test bits per token, lower is better; one colour
    # scale over the study's values, so that panels compare and differences show
    metric, what = ("test_bits", "test bits per token") if r.language else ("test_acc", "")
    grids = [
        (name, part.pivot_table(index="model.depth", columns="model.width", values=metric))
        for name, _, part in settings
    ]
    cells = np.concatenate([grid.to_numpy().ravel() for _, grid in grids])
    cells = cells[np.isfinite(cells)]
    lo, hi = (cells.min(), cells.max()) if len(cells) else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5e-2, hi + 0.5e-2
    for ax, (name, grid) in zip(axes, grids, strict=True):
        image = ax.imshow(
            grid.values, origin="lower", aspect="auto", cmap="viridis", vmin=lo, vmax=hi
        )
        bar = fig.colorbar(image, ax=ax, pad=0.03)
        if r.language:
            labels = [f"{v:.3f}" for v in grid.values.ravel()]
            bar.set_label("test bits per token (lower is better)", fontsize=8)
        else:
            labels = [f"{100 * v:.1f}%" for v in grid.values.ravel()]
            bar.formatter = PercentFormatter(xmax=1, decimals=None)  # as many as it takes
            bar.set_label("test accuracy", fontsize=8)
        bar.ax.tick_params(labelsize=8)
        light = [v < (lo + hi) / 2 for v in grid.values.ravel()]  # viridis: dark below
        ax.set_xticks(range(len(grid.columns)), [str(c) for c in grid.columns])
        ax.set_yticks(range(len(grid.index)), [str(i) for i in grid.index])
        ax.set_xlabel("width")
        ax.set_ylabel("depth")
        ax.set_title(f"AGD {what or 'test accuracy'} ({name or 'all'})", fontsize=10)
        for k, ((i, j), _) in enumerate(np.ndenumerate(grid.values)):
            colour = "w" if light[k] else "k"
            ax.text(j, i, labels[k], ha="center", va="center", fontsize=8, color=colour)
    r.save(
        fig,
        "heatmap_depth_width.png",
        f"AGD's {what or 'test accuracy'} over depth x width (mean over seeds), one panel per "
        "setting of the other swept keys; the numbers are in the cells, and the colour "
        "scale runs from the lowest to the highest cell of all panels.",
    )


def steps_to(rows: pd.DataFrame, target: float) -> float | None:
    """The step at which a run's train loss first reaches ``target``, interpolated
    between epoch ends; None if it never does."""
    rows = rows.sort_values("epoch")
    loss, step = rows["train_loss"].to_numpy(), rows["step"].to_numpy(float)
    hit = np.flatnonzero(loss <= target)
    if not len(hit):
        return None
    i = hit[0]
    if i == 0:
        return float(step[0])
    t = (loss[i - 1] - target) / (loss[i - 1] - loss[i])
    return float(step[i - 1] + t * (step[i] - step[i - 1]))


def batch_size_study(r) -> None:
    agd = r.trials[(r.trials["optimizer.name"] == AGD) & (r.trials["status"] == "completed")]
    if "train.batch_size" not in agd or agd["train.batch_size"].nunique() < 3:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 5.2))
    fits = []
    keys = held_fixed(agd, ("train.batch_size",))
    for i, (name, fixed, part) in enumerate(by_setting(agd, keys)):
        runs = r.epochs[r.epochs["trial_id"].isin(part["trial_id"])]
        target = float(runs.groupby("trial_id")["train_loss"].min().max())  # all reach it
        B, S, seeds = [], [], []
        for trial_id, rows in runs.groupby("trial_id"):
            steps = steps_to(rows, target)
            trial = part[part["trial_id"] == trial_id].iloc[0]
            if steps is not None:
                B.append(float(trial["train.batch_size"]))
                S.append(steps)
                seeds.append(trial["seed"])
        fit = critical_batch(B, S, seeds)
        fits.append({"held_fixed": fixed, "target_train_loss": target, **fit})
        ok = fit["status"] == "fit"
        text = (
            f"B_crit={fit['B_crit']:.0f} [{fit['B_crit_ci'][0]:.0f}, {fit['B_crit_ci'][1]:.0f}]"
            if ok and fit.get("B_crit_ci")
            else f"no fit ({fit.get('reason')})"
        )
        errorbar(axes[0], _seed_groups(B, S), f"{name or 'all'}: {text}", i, line=False)
        if ok:
            bs = np.geomspace(min(B), max(B), 100)
            axes[0].plot(bs, fit["S_min"] * (1 + fit["B_crit"] / bs), color=colour(i), lw=1.2)
        if "noise_scale" in runs and runs["noise_scale"].notna().any():
            last = runs.sort_values("epoch").groupby("trial_id")["noise_scale"].last()
            batch = part.set_index("trial_id")["train.batch_size"]
            noise = _seed_groups(batch[last.index], last.to_numpy())
            errorbar(axes[1], noise, f"{name or 'all'}", i)
            if ok:  # the fitted B_crit of the same series, dashed
                axes[1].axhline(fit["B_crit"], color=colour(i), ls="--", lw=1)
    r.fits["batch_size"] = fits
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks_at(ax.xaxis, agd["train.batch_size"])
        ax.set_xlabel("batch size")
        legend_below(ax, ncols=2)  # under the axes: never over a point or its error bar
    log_ticks(axes[0].yaxis)
    axes[0].set_ylabel("steps to the target train loss")
    axes[0].set_title("AGD: steps to target vs batch size, S = S_min (1 + B_crit/B)", fontsize=10)
    if axes[1].has_data():
        log_ticks(axes[1].yaxis)
        axes[1].set_ylabel("gradient noise scale at the end")
        axes[1].set_title(
            "measured noise scale B_simple (points) vs fitted B_crit (dashed)", fontsize=10
        )
    else:
        axes[1].set_visible(False)
    r.save(
        fig,
        "batch_size.png",
        "Batch-size study (Shallue et al. 2018; McCandlish et al. 2018): steps for AGD to "
        "reach the train loss every run of its series reaches (interpolated between epoch "
        "ends), one series per setting of the other swept keys, means over seeds with "
        "standard deviations, and the critical batch size with its bootstrap 95 % interval; "
        "right: the gradient noise scale measured at the end of training.",
    )
