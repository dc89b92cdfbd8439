"""``agd-ray report SWEEP_DIR``: figures, fitted scaling laws and an HTML page from a
sweep's ``trials.parquet`` and ``epochs.parquet``.

Writes into OUT (default SWEEP_DIR/report): PNG figures, ``fits.json`` and a
self-contained ``report.html`` (figures embedded). Each figure is made only when the
sweep varies what it needs (e.g. the heatmap needs both depth and width).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from agd_ray.analysis.fits import critical_batch, fit_with_bootstrap, power_law  # noqa: E402
from agd_ray.config import ConfigError  # noqa: E402
from agd_ray.sweep.summary import short_group  # noqa: E402

AXES = {  # x-axis name -> (column, label)
    "width": ("model.width", "width"),
    "depth": ("model.depth", "depth (weight layers)"),
    "params": ("params", "parameters"),
    "compute": ("compute", "compute (6 x params x samples)"),
}


def load_sweep(sweep_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    sweep_dir = Path(sweep_dir)
    for name in ("trials.parquet", "epochs.parquet"):
        if not (sweep_dir / name).is_file():
            raise ConfigError(str(sweep_dir), f"no {name} here (is it a sweep's output folder?)")
    trials = pq.read_table(sweep_dir / "trials.parquet").to_pandas()
    epochs = pq.read_table(sweep_dir / "epochs.parquet").to_pandas()
    trials["compute"] = 6.0 * trials["params"].astype(float) * trials["samples"].astype(float)
    return trials, epochs


def best_of_grid(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (group, optimizer): AGD's run, or a baseline's best by test loss."""
    done = trials[trials["status"] == "completed"].dropna(subset=["test_loss"])
    idx = done.groupby(["group", "optimizer.name"])["test_loss"].idxmin()
    return done.loc[idx]


class Report:
    def __init__(self, sweep_dir: str | Path, out: str | Path | None = None):
        self.sweep_dir = Path(sweep_dir)
        self.out = Path(out) if out else self.sweep_dir / "report"
        self.trials, self.epochs = load_sweep(self.sweep_dir)
        self.best = best_of_grid(self.trials)
        self.figures: list[tuple[str, str]] = []  # (file, caption)
        self.fits: dict = {}

    def varies(self, column: str) -> bool:
        return column in self.best and self.best[column].nunique() >= 3

    def save(self, fig, name: str, caption: str) -> None:
        path = self.out / name
        for ax in fig.axes:  # log axes: label the decades only
            for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
                if scale == "log":
                    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        self.figures.append((name, caption))

    # --- figures -------------------------------------------------------------------

    def scaling(self, axis: str) -> None:
        column, label = AXES[axis]
        if not self.varies(column):
            return
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        fits = {}
        for optimizer, rows in self.best.groupby("optimizer.name"):
            for metric, ax in zip(("test_loss", "test_acc"), axes, strict=True):
                ax.scatter(rows[column], rows[metric], s=18, label=optimizer, alpha=0.8)
            try:
                fit = fit_with_bootstrap(rows[column], rows["test_loss"], rows["seed"])
            except ValueError:
                continue
            fits[optimizer] = fit.to_dict()
            xs = np.geomspace(rows[column].min(), rows[column].max(), 100)
            ci = f" [{fit.alpha_ci[0]:.2f}, {fit.alpha_ci[1]:.2f}]" if fit.alpha_ci else ""
            axes[0].plot(
                xs,
                power_law(xs, fit.E, fit.A, fit.alpha),
                lw=1,
                label=f"{optimizer}: {fit.E:.3g} + {fit.A:.3g} x^-{fit.alpha:.2f}{ci}",
            )
        for ax, metric in zip(axes, ("test loss", "test accuracy"), strict=True):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel(metric)
            ax.legend(fontsize=7)
        axes[0].set_title(f"final test loss vs {axis} (fit L = E + A x^-alpha)")
        axes[1].set_title(f"final test accuracy vs {axis}")
        self.fits[f"test_loss_vs_{axis}"] = fits
        self.save(fig, f"scaling_{axis}.png", f"Final loss and accuracy against {label}")

    def heatmaps(self) -> None:
        agd = self.best[self.best["optimizer.name"] == "agd"]
        if not (
            {"model.depth", "model.width"} <= set(agd)
            and agd["model.depth"].nunique() >= 2
            and agd["model.width"].nunique() >= 2
        ):
            return
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, metric in zip(axes, ("test_acc", "train_loss"), strict=True):
            grid = agd.pivot_table(index="model.depth", columns="model.width", values=metric)
            im = ax.imshow(grid.values, origin="lower", aspect="auto", cmap="viridis")
            ax.set_xticks(range(len(grid.columns)), grid.columns)
            ax.set_yticks(range(len(grid.index)), grid.index)
            ax.set_xlabel("width")
            ax.set_ylabel("depth")
            ax.set_title(f"AGD {metric.replace('_', ' ')} (mean over seeds and other keys)")
            for (i, j), v in np.ndenumerate(grid.values):
                ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="w")
            fig.colorbar(im, ax=ax)
        self.save(
            fig, "heatmap_depth_width.png", "Depth x width: AGD's test accuracy and train loss"
        )

    def batch_size_study(self) -> None:
        if not self.varies("train.batch_size"):
            return
        agd = self.trials[
            (self.trials["optimizer.name"] == "agd") & (self.trials["status"] == "completed")
        ]
        if agd.empty:
            return
        runs = self.epochs[self.epochs["trial_id"].isin(agd["trial_id"])]
        final = runs.sort_values("epoch").groupby("trial_id")["train_loss"].last()
        target = float(final.max())  # the loss every batch size reaches
        steps = {}
        for trial_id, rows in runs.groupby("trial_id"):
            reached = rows[rows["train_loss"] <= target].sort_values("epoch")
            batch = int(agd.loc[agd["trial_id"] == trial_id, "train.batch_size"].iloc[0])
            if not reached.empty:
                steps.setdefault(batch, []).append(int(reached["step"].iloc[0]))
        if len(steps) < 2:
            return
        B = np.array(sorted(steps))
        S = np.array([np.mean(steps[b]) for b in B])
        has_noise = "noise_scale" in runs and runs["noise_scale"].notna().any()
        noise = runs.groupby("trial_id")["noise_scale"].last().dropna() if has_noise else []
        fit = {"target_train_loss": target}
        try:
            fit.update(critical_batch(B, S))
        except (ValueError, RuntimeError):
            pass
        if len(noise):
            fit["noise_scale"] = float(noise.median())
        self.fits["batch_size"] = fit
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        axes[0].scatter(B, S, label="measured")
        if "B_crit" in fit:
            bs = np.geomspace(B.min(), B.max(), 100)
            axes[0].plot(
                bs,
                fit["S_min"] * (1 + fit["B_crit"] / bs),
                label=f"S_min (1 + B_crit/B): S_min={fit['S_min']:.0f}, B_crit={fit['B_crit']:.0f}",
            )
        axes[0].set_xscale("log")
        axes[0].set_yscale("log")
        axes[0].set_xlabel("batch size")
        axes[0].set_ylabel(f"steps to train loss {target:.3g}")
        axes[0].legend(fontsize=7)
        axes[0].set_title("AGD: steps to target against batch size")
        if has_noise:  # one line per batch size: the mean over its runs
            batch_of = agd.set_index("trial_id")["train.batch_size"]
            by_batch = runs.assign(batch=runs["trial_id"].map(batch_of))
            mean = by_batch.groupby(["batch", "epoch"])["noise_scale"].mean()
            for batch, rows in mean.groupby(level="batch"):
                epochs = rows.index.get_level_values("epoch")
                axes[1].plot(epochs, rows.values, label=f"B={int(batch)}", lw=1)
        if "B_crit" in fit:
            axes[1].axhline(fit["B_crit"], color="k", ls="--", lw=1, label="fitted B_crit")
        axes[1].set_yscale("log")
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("gradient noise scale B_simple")
        axes[1].legend(fontsize=6)
        axes[1].set_title("measured noise scale (McCandlish et al.)")
        self.save(fig, "batch_size.png", "Batch-size study with the gradient noise scale")

    def agd_vs_baselines(self) -> None:
        if self.best["optimizer.name"].nunique() < 2:
            return
        groups = sorted(self.best["group"].unique())
        optimizers = ["agd"] + sorted(set(self.best["optimizer.name"]) - {"agd"})
        tuning = self.trials.groupby(["group", "optimizer.name"])["samples"].sum()
        fig, axes = plt.subplots(1, 2, figsize=(12, 0.35 * len(groups) + 2.5))
        width = 0.8 / len(optimizers)
        for k, optimizer in enumerate(optimizers):
            accs, costs = [], []
            for g in groups:
                row = self.best[
                    (self.best["group"] == g) & (self.best["optimizer.name"] == optimizer)
                ]
                accs.append(float(row["test_acc"].iloc[0]) if not row.empty else np.nan)
                costs.append(float(tuning.get((g, optimizer), np.nan)))
            y = np.arange(len(groups)) + k * width
            label = optimizer if optimizer == "agd" else f"{optimizer} (best of grid)"
            axes[0].barh(y, accs, height=width, label=label)
            axes[1].barh(y, costs, height=width, label=optimizer)
        for ax in axes:
            ax.set_yticks(
                np.arange(len(groups)) + 0.4 - width / 2,
                [short_group(g) for g in groups],
                fontsize=6,
            )
        axes[0].set_xlabel("test accuracy")
        axes[0].set_title("AGD's single run against each baseline's best")
        axes[1].set_xscale("log")
        axes[1].set_xlabel("samples processed (whole tuning grid)")
        axes[1].set_title("compute spent")
        axes[0].legend(fontsize=7)
        self.save(fig, "agd_vs_baselines.png", "AGD against tuned baselines, and what each cost")

    def eta(self) -> None:
        agd_ids = self.trials.loc[self.trials["optimizer.name"] == "agd", "trial_id"]
        runs = self.epochs[self.epochs["trial_id"].isin(agd_ids)].dropna(subset=["eta_mean"])
        if runs.empty:
            return
        labels = self.trials.set_index("trial_id")["group"]
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for trial_id, rows in runs.groupby("trial_id"):
            ax.plot(
                rows["epoch"],
                rows["eta_mean"],
                lw=1,
                label=short_group(labels.get(trial_id, trial_id)),
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel("eta (epoch mean)")
        ax.set_title("AGD's automatic step size over training")
        if runs["trial_id"].nunique() <= 12:
            ax.legend(fontsize=6)
        self.save(fig, "eta.png", "AGD's eta over training")

    # --- outputs -------------------------------------------------------------------

    def build(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        for axis in AXES:
            self.scaling(axis)
        self.heatmaps()
        self.batch_size_study()
        self.agd_vs_baselines()
        self.eta()
        (self.out / "fits.json").write_text(json.dumps(self.fits, indent=2))
        (self.out / "report.html").write_text(self.html())
        return self.out

    def html(self) -> str:
        from agd_ray.sweep.summary import format_summary, summary_from_trials

        parts = [
            "<!doctype html><meta charset='utf-8'><title>agd-ray report</title>",
            "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
            "img{max-width:100%}pre{background:#f4f4f4;padding:1em;overflow:auto}</style>",
            f"<h1>agd-ray report: {html.escape(self.sweep_dir.name)}</h1>",
            f"<p>{len(self.trials)} trials: "
            + ", ".join(f"{n} {s}" for s, n in self.trials["status"].value_counts().items())
            + "</p>",
            "<h2>AGD against the best of each baseline's grid</h2>",
            f"<pre>{html.escape(format_summary(summary_from_trials(self.trials)))}</pre>",
        ]
        for name, caption in self.figures:
            data = base64.b64encode((self.out / name).read_bytes()).decode()
            parts.append(f"<h2>{html.escape(caption)}</h2><img src='data:image/png;base64,{data}'>")
        parts.append(f"<h2>Fits</h2><pre>{html.escape(json.dumps(self.fits, indent=2))}</pre>")
        return "\n".join(parts)


def make_report(
    sweep_dir: str | Path,
    out: str | Path | None = None,
    echo: Callable = print,
    wandb_cfg=None,
) -> Path:
    """Build the report; with a ``wandb_cfg`` whose mode resolves to online, also
    publish it as a W&B Report and print its URL."""
    report = Report(sweep_dir, out)
    path = report.build()
    echo(f"report: {len(report.figures)} figures, fits.json, report.html -> {path}")
    if wandb_cfg is None:
        return path
    from agd_ray.train.wandb_logger import resolve_mode

    if resolve_mode(wandb_cfg) == "online":
        from agd_ray.analysis.wandb_report import publish
        from agd_ray.sweep.summary import format_summary, summary_from_trials

        summary = format_summary(summary_from_trials(report.trials))
        name = Path(sweep_dir).name
        try:
            url = publish(name, wandb_cfg.project, wandb_cfg.entity, report.fits, summary)
            echo(f"W&B report: {url}")
        except Exception as err:  # the local report stands on its own
            echo(f"W&B report not published: {type(err).__name__}: {err}")
    return path
