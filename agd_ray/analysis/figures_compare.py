"""Comparison figures: AGD against each tuned baseline per architecture, the
compute-optimal frontiers (tuning grids included), learning-rate transfer across
width (the muP paper's figure 1), and AGD's eta over training."""

from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from agd_ray.analysis.compare import AGD, arch_keys, arch_of, frontier, selection_metric
from agd_ray.analysis.figures_scaling import by_setting, held_fixed
from agd_ray.analysis.headline import chosen
from agd_ray.analysis.layout import figure_legend, panels, wrap_title
from agd_ray.analysis.plotting import (
    colour,
    label_points,
    legend_below,
    log_ticks,
    plt,
    schedule_short,
    ticks_at,
)

SHORT = {"depth": "d", "width": "w", "batch_size": "b"}  # a point's name: d4 w256 b64


def initials(arch: str) -> str:
    """``model.depth=4;model.width=256;model.bias=true`` -> ``d4 w256 bias=true``: the
    numeric keys a study sweeps most by a letter, any other by its name."""
    return " ".join(
        f"{SHORT[name]}{value}"
        if name in SHORT
        else schedule_short(value)
        if name == "batch_schedule"
        else f"{name}={value}"
        for name, value in arch_keys(arch)
    )


def _letters(archs) -> str:
    """What the letters in the points' names stand for, e.g. "d depth, w width"."""
    names = {name for a in archs for name, _ in arch_keys(a)}
    used = [f"{letter} {name.replace('_', ' ')}" for name, letter in SHORT.items() if name in names]
    return f" ({', '.join(used)})" if used else ""


def _per_arch(best, optimizer: str, metric: str):
    rows = best[best["optimizer.name"] == optimizer].assign(arch=lambda d: d["group"].map(arch_of))
    return rows.groupby("arch")[metric].agg(["mean", "std"])


def agd_vs_baselines(r) -> None:
    baselines = sorted(set(r.best["optimizer.name"]) - {AGD})
    if not baselines or AGD not in set(r.best["optimizer.name"]):
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    acc = "next-token test accuracy" if r.language else "test accuracy"
    labelled = []  # per panel: what to name, and what the names must keep clear of
    archs = []
    for ax, metric, name in zip(axes, ("test_acc", "test_loss"), (acc, "test loss"), strict=True):
        agd = _per_arch(r.best, AGD, metric)
        archs = list(agd.index)
        x, x_err = agd["mean"], agd["std"].fillna(0)
        drawn = []  # every point and error bar: no name goes over one
        tops = x * np.nan  # each architecture's highest baseline point (its name's)
        bottoms = tops.copy()  # and the lowest: the grey line joins them
        for i, baseline in enumerate(baselines):
            base = _per_arch(r.best, baseline, metric).reindex(agd.index)
            y, y_err = base["mean"], base["std"].fillna(0)
            ax.errorbar(
                x,
                y,
                xerr=x_err,
                yerr=y_err,
                fmt="o",
                ms=4,
                color=colour(i + 1),
                capsize=2,
                label=f"{baseline} ({chosen(r.best, baseline)})",
            )
            for cx, cy, ex, ey in zip(x, y, x_err, y_err, strict=True):
                drawn += [(cx - ex, cy, cx + ex, cy), (cx, cy - ey, cx, cy + ey)]
            tops, bottoms = np.fmax(tops, y), np.fmin(bottoms, y)
        if len(baselines) > 1:  # one architecture's points, one per baseline, joined
            ax.vlines(x, bottoms, tops, color="0.85", lw=0.8, zorder=0)
        names = [initials(a) for a in agd.index]
        if len(agd) <= 12 and any(names):  # each architecture once, by its highest point
            labelled.append((ax, x, tops, names, drawn))
        extents = [v for box in drawn for v in box] + list(x - x_err) + list(x + x_err)
        extents = [v for v in extents if np.isfinite(v)]
        lo, hi = min(extents), max(extents)
        pad = 0.05 * (hi - lo or 1)
        ax.plot(
            [lo - pad, hi + pad],
            [lo - pad, hi + pad],
            color="0.5",
            lw=1,
            ls="--",
            label="equal to AGD",
        )
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel(f"AGD {name} (one untuned run)")
        ax.set_ylabel(f"baseline {name}")
        better = "above" if metric == "test_acc" else "below"
        ax.set_title(f"{name}: baseline {better} the line beats AGD", fontsize=10)
        legend_below(ax, ncols=2)  # under the axes: never over a point or its name
    fig.tight_layout()
    for ax, xs, ys, names, drawn in labelled:
        label_points(ax, xs, ys, names, avoid=drawn, above=len(baselines) > 1)
    r.save(
        fig,
        "agd_vs_baselines.png",
        (
            f"Each point is one setting of the swept keys, named by them{_letters(archs)}; a "
            "name away from its point is joined to it by a thin line"
            if labelled
            else "Each point is one setting of the swept keys"
            + (f" (not named: {len(archs)} of them)" if len(archs) > 12 else "")
        )
        + ": AGD's test metric against the tuned baseline's, the baseline's learning rate "
        "chosen on the validation split; means over seeds with standard deviations. With "
        "several baselines, one setting's points share AGD's value and a grey line "
        "joins them.",
    )


def compute_frontier(r) -> None:
    if r.points.empty or r.points["optimizer.name"].nunique() < 2:
        return
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    optimizers = [AGD] + sorted(set(r.points["optimizer.name"]) - {AGD})
    for i, optimizer in enumerate(optimizers):
        points = r.points[r.points["optimizer.name"] == optimizer]
        mean = points.groupby(["arch", "epoch"])[["compute", "loss"]].mean()
        ax.scatter(mean["compute"], mean["loss"], s=5, color=colour(i), alpha=0.25)
        c, loss = frontier(points)
        runs = r.trials[r.trials["optimizer.name"] == optimizer].groupby("group").size()
        grid = " (whole grid's compute)" if optimizer != AGD and runs.max() > 1 else ""
        ax.step(c, loss, where="post", color=colour(i), lw=1.8, label=f"{optimizer}{grid}")
    agd_c, agd_l = frontier(r.points[r.points["optimizer.name"] == AGD])
    if len(agd_l):
        ax.axhline(agd_l[-1], color="k", ls=":", lw=1, label=f"AGD's best: {agd_l[-1]:.4g}")
    for row in r.headline:
        m = row["compute"]["multiplier"]
        text = "never reaches it" if m is None else f"{m:.2g}x AGD's compute"
        ax.plot([], [], " ", label=f"{row['baseline']} to reach AGD's best: {text}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    log_ticks(ax.xaxis)
    log_ticks(ax.yaxis)
    metric = r.points.attrs.get("metric", "val_loss").replace("_", " ")
    unit = "tokens" if r.language else "samples"
    ax.set_xlabel(f"compute, 6 x params x {unit} (FLOPs)")
    ax.set_ylabel(metric)
    ax.set_title(f"compute-optimal frontier: lowest {metric} for the compute spent", fontsize=10)
    ax.legend(fontsize=7)
    r.save(
        fig,
        "compute_frontier.png",
        f"Lower envelope of {metric} against compute per optimizer (dots: each architecture "
        "after each epoch, mean over seeds). A tuned baseline's compute is its whole "
        "learning-rate grid's, and its loss the grid's best at that point.",
    )


def width_legend(fig, baseline: str, widths: list) -> None:
    """One legend for every panel, under them: a colour per width (the baseline's
    curve) and what a star is (AGD's untuned run at the width of its colour)."""
    handles = [
        Line2D([], [], color=colour(i), marker="o", ms=4, lw=1.2, label=f"{baseline}, width {w}")
        for i, w in enumerate(widths)
        if w is not None
    ]
    star = "AGD, untuned" + (" (at the width of its colour)" if handles else "")
    handles.append(Line2D([], [], color="grey", marker="*", ms=11, ls="none", label=star))
    figure_legend(fig, handles, [h.get_label() for h in handles], ncols=4)


def lr_transfer(r) -> None:
    for baseline, entries in r.fits.get("lr_transfer", {}).items():
        grid = r.trials[r.trials["optimizer.name"] == baseline]
        runs = grid[grid["status"] == "completed"]
        stopped = int((grid["status"] == "stopped").sum())
        metric = selection_metric(runs)
        keys = held_fixed(runs, ("model.width",))
        settings = list(by_setting(runs, keys))
        fig, axes = panels(len(settings), 4.6, 3.8, cols=3)
        agd = r.best[r.best["optimizer.name"] == AGD]
        lrs = sorted(runs["optimizer.lr"].unique())
        agd_x = lrs[-1] * 3
        # one colour per width in every panel, even where a panel lacks a width
        all_widths = sorted(runs["model.width"].unique()) if "model.width" in runs else [None]
        for ax, (name, fixed, part), entry in zip(axes, settings, entries, strict=False):
            widths = sorted(part["model.width"].unique()) if "model.width" in part else [None]
            for w in widths:
                i = all_widths.index(w)
                rows = part if w is None else part[part["model.width"] == w]
                stats = rows.groupby("optimizer.lr")[metric].agg(["mean", "std"])
                ax.errorbar(
                    stats.index,
                    stats["mean"],
                    yerr=stats["std"].fillna(0),
                    marker="o",
                    ms=4,
                    lw=1.2,
                    capsize=2,
                    color=colour(i),
                )
                mine = agd
                for k, v in {**fixed, **({"model.width": w} if w is not None else {})}.items():
                    mine = mine[mine[k] == v] if k in mine else mine
                if not mine.empty:
                    ax.errorbar(
                        [agd_x],
                        [mine[metric].mean()],
                        yerr=[mine[metric].std() or 0],
                        marker="*",
                        ms=11,
                        color=colour(i),
                        capsize=2,
                    )
            shift = entry.get("log2_lr_shift_per_width_doubling") if entry else None
            note = f"\nbest lr x{2**shift:.2g} per width doubling" if shift is not None else ""
            edge = entry.get("best_at_grid_edge") if entry else None
            if note and edge:  # censored by the grid: the shift is a bound
                note += f" (a bound: best at the grid's edge at width {', '.join(edge)})"
            title = f"{baseline}: {name or 'all settings'}{note}"
            ax.set_title(wrap_title(title, 4.4, 9), fontsize=9)
            ax.set_xscale("log")
            ticks_at(ax.xaxis, [*lrs, agd_x])
            ax.set_xticks([*lrs, agd_x], [f"{v:g}" for v in lrs] + ["AGD"])
            ax.set_yscale("log")
            log_ticks(ax.yaxis)
            ax.set_xlabel("learning rate")
            ax.set_ylabel(f"final {metric.replace('_', ' ')}")
        width_legend(fig, baseline, all_widths)
        r.save(
            fig,
            f"lr_transfer_{baseline}.png",
            f"{baseline}: final {metric.replace('_', ' ')} against learning rate, one curve per "
            "width, one panel per setting of the other swept keys (means over seeds with "
            "standard deviations); stars at the right: AGD's untuned run at each width."
            + (
                f" {stopped} of its {len(grid)} runs, stopped early by sweep.scheduler, are "
                "not shown: their last loss is from an earlier epoch."
                if stopped
                else ""
            ),
        )


def eta(r) -> None:
    """AGD's eta per epoch, and its variants' (spectral AGD: ``eta_mean`` too), a
    line style per optimizer and a colour per architecture."""
    runs = r.epochs.dropna(subset=["eta_mean"])
    trials = r.trials[r.trials["trial_id"].isin(runs["trial_id"])]
    if trials.empty:
        return
    optimizers = sorted(set(trials["optimizer.name"]), key=lambda o: (o != AGD, o))
    arch = [k for k in ("model.depth", "model.width") if k in trials and trials[k].nunique() > 1]
    settings = list(by_setting(trials, held_fixed(trials, tuple(arch))))
    fig, axes = panels(len(settings), 5.2, 4)
    for ax, (name, _, part) in zip(axes, settings, strict=True):
        for k, optimizer in enumerate(optimizers):
            style = ("-", "--", ":", "-.")[k % 4]
            mine = part[part["optimizer.name"] == optimizer]
            for i, (series, _, rows) in enumerate(by_setting(mine, arch)):
                curve = runs[runs["trial_id"].isin(rows["trial_id"])]
                stats = curve.groupby("epoch")["eta_mean"].agg(["mean", "min", "max"])
                x = stats.index + 1
                label = " ".join(
                    t for t in (optimizer if len(optimizers) > 1 else "AGD", series) if t
                )
                ax.plot(x, stats["mean"], color=colour(i), ls=style, lw=1.2, label=label)
                if rows["seed"].nunique() > 1:
                    ax.fill_between(x, stats["min"], stats["max"], color=colour(i), alpha=0.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel("eta (mean over the epoch's steps)")
        ax.set_title(f"AGD's step size eta ({name or 'all'})", fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        legend_below(ax, ncols=2)  # under the axes: never over a curve
    also = f" ({', '.join(optimizers)}: a line style each)" if len(optimizers) > 1 else ""
    r.save(
        fig,
        "eta.png",
        f"AGD's automatic step size eta over training{also}, one line per architecture (mean over "
        "seeds; band: range over seeds), one panel per setting of the other swept keys.",
    )
