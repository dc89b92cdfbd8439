"""Batch-size ramps against a constant batch (Smith et al. 2017, "Don't decay the
learning rate, increase the batch size"): the loss per epoch against the samples
seen and against the steps taken, one colour per schedule. A ramp that keeps the
constant batch's curve per sample while taking fewer steps is their result."""

from __future__ import annotations

from matplotlib.ticker import FuncFormatter

from agd_ray.analysis.compare import AGD, selection_metric
from agd_ray.analysis.figures_scaling import by_setting, held_fixed
from agd_ray.analysis.headline import chosen
from agd_ray.analysis.layout import figure_legend
from agd_ray.analysis.plotting import colour, compact, log_ticks, plt, schedule_name

KEY = "train.batch_schedule"
LINES = ("-", "--", ":", "-.")  # AGD, then each baseline
SHOWN = 4  # settings drawn (rows); fits.json has every one


def _summary(runs, curves, metric: str) -> dict:
    last = curves.sort_values("epoch").groupby("trial_id").tail(1)
    return {
        "steps": float(last["step"].mean()),
        f"final_{metric}": float(last[metric].mean()),
        "final_test_loss": float(last["test_loss"].mean()),
        "seeds": int(runs["seed"].nunique()),
    }


def _draw(row, curves, runs, metric: str, style: dict) -> None:
    """One (optimizer, schedule) curve on the samples and the steps panels."""
    stats = curves.groupby("epoch")[[metric, "samples", "step"]].agg(["mean", "min", "max"])
    for ax, x in zip(row, ("samples", "step"), strict=True):
        xs = stats[(x, "mean")]
        ax.plot(xs, stats[(metric, "mean")], lw=1.4, **style)
        if runs["seed"].nunique() > 1:
            ax.fill_between(
                xs, stats[(metric, "min")], stats[(metric, "max")], color=style["color"], alpha=0.15
            )


def batch_schedules(r) -> None:
    """``batch_schedule.png`` and ``fits["batch_schedule"]`` when the study sweeps
    ``train.batch_schedule``: per setting of the other swept keys, optimizer (AGD,
    each baseline's best of grid) and schedule, the mean final losses and steps over
    seeds (the figure draws the first ``SHOWN`` settings)."""
    best = r.best
    if KEY not in best or best[KEY].nunique() < 2:
        return
    metric = selection_metric(r.epochs)
    optimizers = [AGD] + sorted(set(best["optimizer.name"]) - {AGD})
    schedules = sorted(best[KEY].unique(), key=lambda s: (s != "null", s))
    keys = held_fixed(best, (KEY,))
    settings = list(by_setting(best, keys))
    shown = settings[:SHOWN]
    fig, axes = plt.subplots(len(shown), 2, figsize=(11, 3.9 * len(shown) + 0.5), squeeze=False)
    summary: dict = {}
    for n, (name, _, part) in enumerate(settings):
        for i, schedule in enumerate(schedules):
            for j, optimizer in enumerate(optimizers):
                runs = part[(part[KEY] == schedule) & (part["optimizer.name"] == optimizer)]
                curves = r.epochs[r.epochs["trial_id"].isin(runs["trial_id"])]
                if curves.empty:
                    continue
                by_optimizer = summary.setdefault(name or "all", {}).setdefault(optimizer, {})
                by_optimizer[schedule] = _summary(runs, curves, metric)
                if n >= SHOWN:
                    continue
                # a swept batch size is in the row's title; else the schedule names it
                size = None if "train.batch_size" in keys else runs["train.batch_size"].iloc[0]
                label = f"{optimizer}, {schedule_name(schedule, size)}"
                style = {"color": colour(i), "ls": LINES[j % len(LINES)], "label": label}
                _draw(axes[n], curves, runs, metric, style)
    for row, (name, _, _) in zip(axes, shown, strict=True):
        for ax, x in zip(row, ("samples seen", "steps (parameter updates)"), strict=True):
            ax.set_xlabel(x)
            ax.set_ylabel(metric.replace("_", " "))
            ax.set_yscale("log")
            log_ticks(ax.yaxis)
            title = f"{metric.replace('_', ' ')} against {x.split(' (')[0]}"
            ax.set_title(title + (f" ({name})" if name else ""), fontsize=10)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: compact(v)))
    legend = {}  # every curve's label once, whichever panel drew it
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    figure_legend(fig, list(legend.values()), list(legend.keys()), ncols=2)
    r.fits["batch_schedule"] = summary
    tuned = ", ".join(f"{o} ({chosen(best, o)})" for o in optimizers)
    cut = (
        f" The first {SHOWN} of {len(settings)} settings are drawn; fits.json has all."
        if len(settings) > SHOWN
        else ""
    )
    r.save(
        fig,
        "batch_schedule.png",
        f"{metric.replace('_', ' ').capitalize()} after each epoch against the samples seen "
        "(left) and the steps taken (right), one colour per batch schedule and one line "
        f"style per optimizer: {tuned}; means over seeds (bands: their range). A ramp "
        "that follows the constant batch per sample in fewer steps is Smith et al.'s "
        f"result (2017).{cut}",
    )
