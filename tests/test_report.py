"""The report on synthetic sweeps with known answers: baselines chosen on the
validation split, laws recovered with intervals and hold-out errors, series that
are not laws drawn without a line, numeric ticks on every axis, the compute
multiplier, and report.html in a real headless browser."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from agd_ray.analysis import figures_scaling
from agd_ray.analysis.report import Report
from agd_ray.config import load_config
from agd_ray.results import write_results
from agd_ray.sweep.grid import expand
from agd_ray.trial import TrialOutcome

EPOCHS = 4
LRS = [1e-3, 1e-2, 1e-1]


def agd_loss(width: int, depth: int, seed: int) -> float:
    """A true power law in width (E=0.3, A=2, alpha=0.5), a depth offset, 1 % seed noise."""
    noise = 1 + 0.01 * np.random.default_rng(1000 * width + 10 * depth + seed).standard_normal()
    return (0.3 + 2.0 * width**-0.5 + 0.01 * depth) * noise


def adam_losses(width: int, depth: int, seed: int, lr: float) -> tuple[float, float]:
    """(val, test): lr 1e-2 is best on validation, 1e-1 best on test (a grid tuned
    on test would pick another run); both a little worse than AGD at large width."""
    base = agd_loss(width, depth, seed) * 1.05
    val = base * {1e-3: 1.3, 1e-2: 1.0, 1e-1: 1.1}[lr]
    test = base * {1e-3: 1.3, 1e-2: 1.05, 1e-1: 0.98}[lr]
    return val, test


def synthetic_sweep(
    out_dir, *grid: str, baselines: bool = True, seeds: str = "[0, 1]", lrs: list = LRS
):
    sets = ["name=syn", *grid, f"sweep.seeds={seeds}"]
    if baselines:
        sets.append(f"sweep.baselines=[{{name: adam, lr: {lrs}}}]")
    cfg = load_config(None, sets)
    entries = []
    for spec in expand(cfg):
        c = spec.config
        w, d, seed = c["model"]["width"], c["model"]["depth"], c["train"]["seed"]
        if spec.optimizer == "agd":
            val = test = agd_loss(w, d, seed)
            val *= 1.01
        else:
            val, test = adam_losses(w, d, seed, c["optimizer"]["lr"])
        history = []
        for e in range(EPOCHS):
            decay = 1 + 0.5 * (EPOCHS - 1 - e) / EPOCHS  # falls to the final value
            history.append(
                {
                    "epoch": e,
                    "step": 10 * (e + 1),
                    "samples": 1000 * (e + 1),
                    "batch_size": 100,
                    "train_loss": 0.9 * test * decay,
                    "train_acc": 1 - test / 2,
                    "val_loss": val * decay,
                    "val_acc": 1 - val / 2,
                    "test_loss": test * decay,
                    "test_acc": 1 - test * decay / 2,
                    "eta_mean": 0.1 + 0.01 * e if spec.optimizer == "agd" else None,
                    "wall_s": 1.0 + e,
                }
            )
        params = w * w * d
        entries.append((spec, TrialOutcome(spec.trial_id, "completed", history, params=params)))
    write_results(entries, out_dir)
    return cfg


WIDTHS = "sweep.grid.model.width=[16, 64, 256, 1024, 4096]"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "syn"
    synthetic_sweep(out, WIDTHS)
    report = Report(out)
    report.build()
    return report


@pytest.fixture(scope="module")
def report(built):
    from agd_ray.analysis.headline import headline_text

    return built.out, [headline_text(h) for h in built.headline]


def test_baselines_are_chosen_on_validation_and_scored_on_test(report):
    folder, _ = report
    best = pq.read_table(folder / "best_of_grid.parquet").to_pandas()
    expected = {
        "group",
        "optimizer.name",
        "trial_id",
        "selected_by",
        "val_loss",
        "test_loss",
        "test_acc",
        "runs",
        "grid_samples",
        "grid_compute",
    }
    assert expected <= set(best.columns)
    adam = best[best["optimizer.name"] == "adam"]
    assert len(adam) == 10 and (adam["selected_by"] == "val_loss").all()
    assert (adam["optimizer.lr"] == 1e-2).all()  # best on validation, not 1e-1 (best on test)
    assert (adam["runs"] == 3).all()
    agd = best[best["optimizer.name"] == "agd"]
    assert (agd["runs"] == 1).all() and len(agd) == 10
    one = adam.iloc[0]
    assert one["grid_samples"] == 3 * 1000 * EPOCHS
    assert one["grid_compute"] == pytest.approx(6 * one["params"] * one["grid_samples"])


def test_width_law_is_recovered_with_interval_and_holdout(report):
    folder, _ = report
    fits = json.loads((folder / "fits.json").read_text())
    (agd,) = fits["test_loss_vs_width"]["agd"]
    assert agd["status"] == "fit", agd
    lo, hi = agd["alpha_ci"]
    assert lo <= 0.5 <= hi and hi - lo < 0.5
    assert agd["E_ci"][0] <= 0.3 + 0.01 * 4 <= agd["E_ci"][1] + 1e-9
    assert agd["n_x"] == 5 and agd["n_points"] == 10
    assert agd["holdout_rel_error"] < 0.05
    for key in ("E", "A", "alpha", "E_ci", "A_ci", "alpha_ci", "reason"):
        assert key in agd


def test_compute_multiplier_and_lr_transfer_in_fits(report):
    folder, lines = report
    fits = json.loads((folder / "fits.json").read_text())
    adam = fits["compute_multiplier"]["adam"]
    # Adam's grid is 3 runs of at least AGD's compute each, and its best val loss at
    # the largest width is 5 % above AGD's: it never reaches AGD's best
    assert adam["reaches"] is False and adam["multiplier"] is None
    assert any("never reaches" in line for line in lines)
    assert not any("grid's edge" in line for line in lines)  # lr 1e-2: inside the grid
    (transfer,) = fits["lr_transfer"]["adam"]
    assert set(transfer["best_lr_per_width"].values()) == {1e-2}
    assert transfer["log2_lr_shift_per_width_doubling"] == pytest.approx(0.0, abs=1e-9)
    assert transfer["best_at_grid_edge"] == []  # 1e-2 of 1e-3, 1e-2, 1e-1


def test_every_figure_has_numeric_ticks(report):
    folder, _ = report
    names = {p.name for p in folder.glob("*.png")}
    assert {
        "agd_vs_baselines.png",
        "compute_frontier.png",
        "lr_transfer_adam.png",
        "scaling_width.png",
        "eta.png",
    } <= names


def test_tick_check_passes_on_the_width_sweeps_figures(built):
    assert len(built.figures) >= 5 and built.tick_problems == []


@pytest.mark.parametrize(
    "grid",
    [
        "sweep.grid.model.depth=[2, 4, 8]",
        "sweep.grid.model.width=[100, 120, 150]",  # less than a decade on a log axis
    ],
)
def test_tick_check_passes_on_every_figure(tmp_path, grid):
    synthetic_sweep(tmp_path / "syn", f"{grid}")
    report = Report(tmp_path / "syn")
    report.build()
    assert report.figures and report.tick_problems == []


def test_a_three_point_series_is_unidentified_and_drawn_without_a_line(tmp_path, monkeypatch):
    synthetic_sweep(tmp_path / "syn", "sweep.grid.model.depth=[2, 4, 8]", baselines=False)
    report = Report(tmp_path / "syn")
    report.out.mkdir(parents=True)
    saved = []
    monkeypatch.setattr(report, "save", lambda fig, name, caption: saved.append(fig))
    figures_scaling.scaling(report, "depth")
    (entry,) = report.fits["test_loss_vs_depth"]["agd"]
    assert entry["status"] == "unidentified" and "x value" in entry["reason"]
    (fig,) = saved
    fitted = [line for ax in fig.axes for line in ax.get_lines() if len(line.get_xdata()) == 100]
    assert fitted == []


def test_a_series_on_a_bound_is_unidentified(tmp_path, monkeypatch):
    """A loss that grows with width: no decreasing law fits, alpha runs to 0."""
    monkeypatch.setattr(
        "test_report.agd_loss", lambda w, d, s: (0.3 + 0.01 * w**0.5) * (1 + 0.001 * s)
    )
    synthetic_sweep(tmp_path / "syn", WIDTHS, baselines=False)
    report = Report(tmp_path / "syn")
    report.build()
    (entry,) = report.fits["test_loss_vs_width"]["agd"]
    assert entry["status"] == "unidentified", entry
    assert entry["reason"]


def test_report_html_in_a_real_browser(report):
    from browser import images_in_page

    folder, _ = report
    page = images_in_page(folder / "report.html")
    assert page["images"] >= 5 and page["broken"] == []
    assert "Headline" in page["h2"][0]
    assert "chosen on val_loss" in page["text"] and "never reaches" in page["text"]


@pytest.mark.parametrize("language", [False, True])
def test_heatmap_has_a_colour_scale_over_the_studys_values(language):
    from types import SimpleNamespace

    import pandas as pd

    from agd_ray.analysis.layout import tick_problems
    from agd_ray.analysis.plotting import plt

    rows = [
        {
            "group": f"model.depth={d};model.width={w};train.batch_size={b};seed=0",
            "optimizer.name": "agd",
            "model.depth": d,
            "model.width": w,
            "train.batch_size": b,
            "test_acc": 0.3 + 0.01 * d + 0.001 * w - 0.0005 * b,
            "test_bits": 3 - 0.1 * d,
        }
        for d in (2, 4, 8)
        for w in (64, 256)
        for b in (64, 256)
    ]
    saved = {}
    r = SimpleNamespace(
        best=pd.DataFrame(rows),
        language=language,
        save=lambda fig, name, caption: saved.update(fig=fig, name=name, caption=caption),
    )
    figures_scaling.heatmaps(r)
    fig = saved["fig"]
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(panels) == len(bars) == 2  # one per batch size, each with its scale
    metric = "test_bits" if language else "test_acc"
    values = r.best[metric]
    for ax in panels:
        lo, hi = ax.images[0].get_clim()
        assert (lo, hi) == (values.min(), values.max())  # the study's range, every panel
    label = bars[0].get_ylabel()
    assert ("bits per token" in label) if language else (label == "test accuracy")
    assert tick_problems(fig) == []
    plt.close(fig)


@pytest.mark.parametrize(
    ("n_seeds", "ci", "says"),
    [
        (1, None, "0.3x AGD's compute, tuning grid included (one seed: no interval"),
        (2, None, "over seeds; each seed alone: 0.25, never; 2 seeds are too few for an interval"),
        (
            5,
            [0.2, 0.45],
            "0.3x AGD's compute, tuning grid included (95 % CI over 5 seeds 0.2 to 0.45)",
        ),
    ],
)
def test_headline_gives_the_multipliers_interval_or_says_why_there_is_none(n_seeds, ci, says):
    from agd_ray.analysis.headline import headline_text

    row = {
        "baseline": "adam",
        "grid_runs": 3,
        "selected_by": "val_loss",
        "baseline_test_acc": 0.62,
        "agd_test_acc": 0.54,
        "baseline_test_loss": 0.54,
        "agd_test_loss": 0.61,
        "architectures": 12,
        "seeds": n_seeds,
        "agd_wins": 2,
        "groups": 12 * n_seeds,
        "compute": {
            "multiplier": 0.3,
            "multiplier_ci": ci,
            "n_seeds": n_seeds,
            "per_seed": {0: 0.25, 1: None} if n_seeds == 2 else None,
            "metric": "val_loss",
            "agd_best_loss": 0.42,
        },
    }
    assert says in headline_text(row)


def frontier_points(n_seeds: int, rng):
    """Loss against compute for AGD and a baseline that needs about half AGD's compute
    to reach AGD's best loss, each seed a little different."""
    import pandas as pd

    rows = []
    for seed in range(n_seeds):
        speed = 2.0 * (1 + 0.1 * rng.standard_normal())
        for optimizer, rate in (("agd", 1.0), ("adam", speed)):
            for epoch in range(20):
                rows.append(
                    {
                        "optimizer.name": optimizer,
                        "seed": seed,
                        "arch": "d4",
                        "epoch": epoch,
                        "compute": 1e9 * (epoch + 1),
                        "loss": 1.0 / (1 + rate * (epoch + 1) / 10),
                    }
                )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n_seeds", [1, 2, 4, 5])
def test_compute_multiplier_interval_only_from_enough_seeds(n_seeds):
    from agd_ray.analysis.compare import compute_multiplier
    from agd_ray.analysis.fits import MIN_SEEDS

    result = compute_multiplier(frontier_points(n_seeds, np.random.default_rng(n_seeds)), "adam")
    assert 0.35 < result["multiplier"] < 0.7
    if n_seeds >= MIN_SEEDS:
        lo, hi = result["multiplier_ci"]
        assert lo <= result["multiplier"] <= hi and lo < hi
    else:  # 2-4 seeds: too few distinct resamples for a 95 % interval
        assert result["multiplier_ci"] is None
    if n_seeds >= 2:
        per_seed = result["per_seed"]
        assert sorted(per_seed) == list(range(n_seeds))
        assert all(0.3 < m < 0.8 for m in per_seed.values())
    else:
        assert result["per_seed"] is None


def test_a_seed_without_agds_run_has_no_multiplier_rather_than_never():
    from agd_ray.analysis.compare import compute_multiplier

    points = frontier_points(3, np.random.default_rng(0))
    points = points[~((points["optimizer.name"] == "agd") & (points["seed"] == 2))]
    result = compute_multiplier(points, "adam")
    assert result["n_seeds"] == 2 and sorted(result["per_seed"]) == [0, 1]
    assert all(m is not None for m in result["per_seed"].values())  # not "never"


@pytest.mark.parametrize("spread", [0.006, 0.0])
def test_heatmap_colour_bar_ticks_differ_when_accuracies_are_close(spread):
    from types import SimpleNamespace

    import pandas as pd

    from agd_ray.analysis.plotting import plt

    rows = [
        {
            "group": f"model.depth={d};model.width={w};seed=0",
            "optimizer.name": "agd",
            "model.depth": d,
            "model.width": w,
            "test_acc": 0.503 + spread * (d + w / 256) / 10,
        }
        for d in (2, 4)
        for w in (64, 256)
    ]
    saved = {}
    r = SimpleNamespace(
        best=pd.DataFrame(rows), language=False, save=lambda fig, n, c: saved.update(fig=fig)
    )
    figures_scaling.heatmaps(r)
    fig = saved["fig"]
    fig.canvas.draw()
    (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    labels = [t.get_text() for t in bar.get_yticklabels() if t.get_text()]
    assert len(labels) >= 2 and len(set(labels)) == len(labels), labels
    plt.close(fig)


def test_a_fit_that_is_not_a_law_prints_its_reason_not_its_numbers():
    from agd_ray.analysis.html import fit_rows

    law = {"status": "fit", "E": 0.3, "A": 2.0, "alpha": 0.5, "E_ci": [0.28, 0.31]}
    law |= {"A_ci": [1.8, 2.2], "alpha_ci": [0.45, 0.55], "holdout_rel_error": 0.004}
    not_law = {**law, "status": "unidentified", "reason": "alpha's 95 % interval is wide"}
    fits = {
        "test_loss_vs_model.width": {
            "agd": [
                {**law, "held_fixed": {}, "n_points": 10, "n_x": 5},
                {**not_law, "held_fixed": {"train.batch_size": 64}, "n_points": 10, "n_x": 5},
            ]
        }
    }
    header, (fitted, unidentified) = fit_rows(fits)
    alpha = header.index("alpha [95 % CI]")
    assert fitted[alpha] == "0.5 [0.45, 0.55]" and fitted[header.index("hold-out error")] == "0.4 %"
    cells = unidentified[header.index("E [95 % CI]") : alpha + 1]
    assert cells == ["-", "-", "-"] and unidentified[header.index("hold-out error")] == "-"
    assert unidentified[-1] == "alpha's 95 % interval is wide"
