"""Batch-size ramps against a constant batch (Smith et al. 2017, "Don't decay the
learning rate, increase the batch size"): the loss per epoch against the samples
seen and against the steps taken, one colour per schedule. A ramp that keeps the
constant batch's curve per sample while taking fewer steps is their result."""

from __future__ import annotations

from matplotlib.ticker import FuncFormatter

from agd_ray.analysis.compare import AGD, chosen
from agd_ray.analysis.figures_scaling import by_setting, held_fixed
from agd_ray.analysis.plotting import colour, compact, log_ticks, plt, schedule_name

KEY = "train.batch_schedule"
LINES = ("-", "--", ":", "-.")  # AGD, then each baseline


def batch_schedules(r) -> None:
    """``batch_schedule.png`` and ``fits["batch_schedule"]`` when the study sweeps
    ``train.batch_schedule``: per optimizer (AGD, each baseline's best of grid) and
    schedule, the mean final losses and steps over seeds."""
    best = r.best
    if KEY not in best or best[KEY].nunique() < 2:
        return
    metric = "val_loss" if r.epochs["val_loss"].notna().any() else "test_loss"
    optimizers = [AGD] + sorted(set(best["optimizer.name"]) - {AGD})
    schedules = sorted(best[KEY].unique(), key=lambda s: (s != "null", s))
    settings = list(by_setting(best, held_fixed(best, (KEY,))))[:4]
    fig, axes = plt.subplots(
        len(settings), 2, figsize=(11, 3.9 * len(settings) + 0.5), squeeze=False
    )
    summary: dict = {}
    for row, (name, _, part) in zip(axes, settings, strict=True):
        for i, schedule in enumerate(schedules):
            for j, optimizer in enumerate(optimizers):
                runs = part[(part[KEY] == schedule) & (part["optimizer.name"] == optimizer)]
                curves = r.epochs[r.epochs["trial_id"].isin(runs["trial_id"])]
                if curves.empty:
                    continue
                stats = curves.groupby("epoch")[[metric, "samples", "step"]].agg(
                    ["mean", "min", "max"]
                )
                size = runs["train.batch_size"].iloc[0] if "train.batch_size" in runs else None
                label = f"{optimizer}, {schedule_name(schedule, size)}"
                for ax, x in zip(row, ("samples", "step"), strict=True):
                    xs = stats[(x, "mean")]
                    ax.plot(
                        xs,
                        stats[(metric, "mean")],
                        color=colour(i),
                        ls=LINES[j % 4],
                        lw=1.4,
                        label=label,
                    )
                    if runs["seed"].nunique() > 1:
                        ax.fill_between(
                            xs,
                            stats[(metric, "min")],
                            stats[(metric, "max")],
                            color=colour(i),
                            alpha=0.15,
                        )
                last = curves.sort_values("epoch").groupby("trial_id").tail(1)
                summary.setdefault(name or "all", {}).setdefault(optimizer, {})[schedule] = {
                    "steps": float(last["step"].mean()),
                    f"final_{metric}": float(last[metric].mean()),
                    "final_test_loss": float(last["test_loss"].mean()),
                    "seeds": int(runs["seed"].nunique()),
                }
        for ax, x in zip(row, ("samples seen", "steps (parameter updates)"), strict=True):
            ax.set_xlabel(x)
            ax.set_ylabel(metric.replace("_", " "))
            ax.set_yscale("log")
            log_ticks(ax.yaxis)
            ax.set_title(
                f"{metric.replace('_', ' ')} against {x.split(' (')[0]}"
                + (f" ({name})" if name else ""),
                fontsize=10,
            )
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: compact(v)))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=2, fontsize=8, frameon=False)
    r.fits["batch_schedule"] = summary
    tuned = ", ".join(f"{o} ({chosen(best, o)})" for o in optimizers)
    r.save(
        fig,
        "batch_schedule.png",
        f"{metric.replace('_', ' ').capitalize()} after each epoch against the samples seen "
        "(left) and the steps taken (right), one colour per batch schedule and one line "
        f"style per optimizer: {tuned}; means over seeds (bands: their range). A ramp "
        "that follows the constant batch per sample in fewer steps is Smith et al.'s "
        "result (2017).",
    )
