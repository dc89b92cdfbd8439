"""``agd-ray report SWEEP_DIR``: the headline, figures, fitted laws and an HTML page
from a sweep's ``trials.parquet`` and ``epochs.parquet``.

Writes into OUT (default SWEEP_DIR/report): PNG figures, ``best_of_grid.parquet``,
``fits.json`` and a self-contained ``report.html`` (figures embedded) that leads
with AGD against each tuned baseline. Baselines are tuned on the validation split
and scored on test. Each figure is made only when the sweep varies what it needs.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from agd_ray.analysis import compare, figures_compare, figures_scaling, figures_schedule
from agd_ray.analysis.grid_edge import grid_edges
from agd_ray.analysis.headline import headline_text
from agd_ray.analysis.html import render
from agd_ray.analysis.layout import tick_problems
from agd_ray.analysis.plotting import plt
from agd_ray.config import ConfigError
from agd_ray.results import write_atomic

log = logging.getLogger(__name__)


def load_sweep(sweep_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    sweep_dir = Path(sweep_dir)
    for name in ("trials.parquet", "epochs.parquet"):
        if not (sweep_dir / name).is_file():
            raise ConfigError(str(sweep_dir), f"no {name} here (is it a sweep's output folder?)")
    trials = _readable(pq.read_table(sweep_dir / "trials.parquet"))
    epochs = _readable(pq.read_table(sweep_dir / "epochs.parquet"))
    for frame in (trials, epochs):  # sweeps from before the validation split
        for column in ("val_loss", "val_acc"):
            if column not in frame:
                frame[column] = np.nan
    trials["compute"] = 6.0 * trials["params"].astype(float) * trials["samples"].astype(float)
    return trials, epochs


def _readable(table) -> pd.DataFrame:
    """``table`` as a DataFrame whose list-valued columns (a swept
    ``train.batch_schedule``) hold their values as the JSON text the trials' groups
    use (``[[0,64],[10,320]]``, ``null``): values that can be grouped, compared and
    printed."""
    frame = table.to_pandas()
    for field in table.schema:
        if pa.types.is_list(field.type) or pa.types.is_large_list(field.type):
            frame[field.name] = [
                json.dumps(v, separators=(",", ":")) for v in table.column(field.name).to_pylist()
            ]
    return frame


def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


class Report:
    def __init__(self, sweep_dir: str | Path, out: str | Path | None = None):
        self.sweep_dir = Path(sweep_dir)
        self.out = Path(out) if out else self.sweep_dir / "report"
        self.trials, self.epochs = load_sweep(self.sweep_dir)
        self.best = compare.best_of_grid(self.trials)
        if not self.best.empty:  # a baseline chosen at its grid's edge: said in the headline
            self.best["grid_edge"] = grid_edges(self.trials, self.best)
        self.points = compare.curves(self.trials, self.epochs)
        self.headline = compare.headline(self.best, self.points) if not self.best.empty else []
        # a language model's sweep: accuracy is next-token accuracy, compute counts tokens
        self.language = "tokens" in self.trials and self.trials["tokens"].notna().any()
        self.figures: list[tuple[str, str]] = []  # (file, caption)
        self.tick_problems: list[str] = []
        self.fits: dict = {}

    def save(self, fig, name: str, caption: str) -> None:
        """Save a figure, after asking matplotlib whether every axis has numbers and
        every legend is whole."""
        fig.tight_layout()
        if fig.legends:  # a figure's own legend sits under its panels: room for it there
            fig.canvas.draw()
            height = max(leg.get_window_extent().height for leg in fig.legends)
            fig.tight_layout(rect=(0, min(height / fig.bbox.height + 0.01, 0.5), 1, 1))
        problems = tick_problems(fig)
        if problems:
            log.warning("%s: unlabelled axes or cut legends: %s", name, problems)
            self.tick_problems += [f"{name}: {p}" for p in problems]
        fig.savefig(self.out / name, dpi=110)
        plt.close(fig)
        self.figures.append((name, caption))

    def build(self) -> Path:
        # The fits run thousands of small L-BFGS-B solves; OpenBLAS's thread pool
        # costs more than it gives on them (10x slower on a busy 2-core machine).
        with threadpool_limits(limits=1, user_api="blas"):
            return self._build()

    def _build(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        self.fits["compute_multiplier"] = {h["baseline"]: h["compute"] for h in self.headline}
        baselines = sorted(set(self.trials["optimizer.name"]) - {compare.AGD})
        transfer = {b: compare.lr_transfer(self.trials, b) for b in baselines}
        self.fits["lr_transfer"] = {b: t for b, t in transfer.items() if t}
        figures_compare.agd_vs_baselines(self)
        figures_compare.compute_frontier(self)
        figures_compare.lr_transfer(self)
        for axis in figures_scaling.AXES:
            figures_scaling.scaling(self, axis)
        figures_scaling.heatmaps(self)
        figures_scaling.batch_size_study(self)
        figures_compare.eta(self)
        figures_schedule.batch_schedules(self)
        if not self.best.empty:
            write_atomic(
                _arrow(self.best.drop(columns=["compute"], errors="ignore")),
                self.out / "best_of_grid.parquet",
            )
        self.fits = _json_ready(self.fits)
        (self.out / "fits.json").write_text(json.dumps(self.fits, indent=2))
        (self.out / "report.html").write_text(render(self))
        return self.out


def _arrow(frame: pd.DataFrame):
    return pa.Table.from_pandas(frame, preserve_index=False)


def make_report(
    sweep_dir: str | Path,
    out: str | Path | None = None,
    echo: Callable = print,
    wandb_cfg=None,
) -> Path:
    """Build the report and print its headline; with a ``wandb_cfg`` whose mode
    resolves to online, also publish it as a W&B Report and print its URL."""
    report = Report(sweep_dir, out)
    path = report.build()
    for row in report.headline:
        echo(headline_text(row))
    echo(
        f"report: {len(report.figures)} figures, best_of_grid.parquet, fits.json, "
        f"report.html -> {path}"
    )
    if wandb_cfg is None:
        return path
    from agd_ray.wandb_mode import resolve_mode

    if resolve_mode(wandb_cfg) == "online":
        from agd_ray.analysis.wandb_report import publish

        name = Path(sweep_dir).name
        try:
            url = publish(name, wandb_cfg.project, wandb_cfg.entity, report)
            echo(f"W&B report: {url}")
        except Exception as err:  # the local report stands on its own
            echo(f"W&B report not published: {type(err).__name__}: {err}")
    return path


def report_after_sweep(result, wandb_cfg=None, debug: bool = False) -> bool:
    """A finished sweep's report (``result``: its ``SweepResult``), published beside
    its results. If it fails, one line says so (with ``debug``, the traceback too) and
    the sweep's results, written already, stay as they are. Returns whether it worked."""
    try:
        make_report(result.out_dir, wandb_cfg=wandb_cfg)
    except Exception as err:
        if debug:
            traceback.print_exc()
        print(
            f"error: the report failed ({type(err).__name__}: {first_line(err)}); the "
            f"results are in "
            f"{result.out_dir}: `agd-ray report {result.out_dir}` makes it again",
            file=sys.stderr,
        )
        return False
    result.paths.publish("report")
    return True


def first_line(err: BaseException) -> str:
    """An error's message on one line (a pandas KeyError's or a ConfigError's may
    run over several)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""
