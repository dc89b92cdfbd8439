"""What a reader needs from a figure's text: a baseline without a grid is not called
a best of grid; the learning-rate transfer figure gives every width one colour in
every panel and one legend that says what a star is; a narrow log axis gets round,
evenly spaced, distinct tick labels."""

import numpy as np
import pandas as pd
import pytest

from agd_ray.analysis import compare, figures_compare, figures_scaling
from agd_ray.analysis.headline import chosen, headline_text
from agd_ray.analysis.layout import figure_legend, panels, tick_problems, wrap_title
from agd_ray.analysis.plotting import colour, log_ticks, plt
from agd_ray.analysis.report import Report
from tests.test_report import synthetic_sweep


class Capture(Report):
    """A Report that keeps each figure's legend texts and panels before saving."""

    def save(self, fig, name, caption):
        fig.canvas.draw()
        legends = [leg for ax in fig.axes if (leg := ax.get_legend())] + list(fig.legends)
        self.seen = getattr(self, "seen", {})
        self.seen[name] = {
            "legend": [t.get_text() for leg in legends for t in leg.get_texts()],
            "titles": [ax.get_title() for ax in fig.axes if ax.get_visible()],
            "axes": [ax for ax in fig.axes if ax.get_visible()],
        }
        super().save(fig, name, caption)


def test_chosen_says_untuned_best_of_grid_or_one_run():
    best = pd.DataFrame(
        {
            "optimizer.name": ["agd", "adam", "adam", "prodigy"],
            "runs": [1, 3, 3, 1],
            "selected_by": ["val_loss"] * 4,
        }
    )
    assert chosen(best, "agd") == "untuned"
    assert chosen(best, "adam") == "best of grid by val loss"
    assert chosen(best, "prodigy") == "one run"


def test_a_baseline_with_one_run_is_not_called_a_best_of_grid(tmp_path):
    out = tmp_path / "syn"
    synthetic_sweep(out, "sweep.grid.model.width=[16, 64, 256, 1024]", lrs=[1e-2])
    report = Capture(out)
    report.out.mkdir(parents=True)
    figures_compare.agd_vs_baselines(report)
    figures_compare.compute_frontier(report)
    figures_scaling.scaling(report, "width")
    legend = report.seen["agd_vs_baselines.png"]["legend"]
    assert "adam (one run)" in legend and not any("best of grid" in t for t in legend)
    assert "adam (one run)" in report.seen["scaling_width.png"]["titles"]
    frontier = report.seen["compute_frontier.png"]["legend"]
    assert "adam" in frontier and not any("whole grid" in t for t in frontier)
    (line,) = [headline_text(row) for row in report.headline]
    assert line.startswith("adam (one run, scored on test)") and "grid" not in line, line


def test_lr_transfer_keeps_each_widths_colour_and_explains_the_star(tmp_path):
    out = tmp_path / "syn"
    synthetic_sweep(out, "sweep.grid.model.width=[64, 256]", "sweep.grid.model.depth=[2, 4]")
    report = Capture(out)
    # depth 2 lost its width-64 baseline runs: its one curve is still width 256's colour
    trials = report.trials
    gone = (trials["optimizer.name"] == "adam") & (trials["model.depth"] == 2)
    report.trials = trials[~(gone & (trials["model.width"] == 64))]
    report.fits["lr_transfer"] = {"adam": compare.lr_transfer(report.trials, "adam")}
    report.out.mkdir(parents=True, exist_ok=True)
    figures_compare.lr_transfer(report)
    seen = report.seen["lr_transfer_adam.png"]
    assert seen["legend"] == [
        "adam, width 64",
        "adam, width 256",
        "AGD, untuned (at the width of its colour)",
    ]
    for ax, title in zip(seen["axes"], seen["titles"], strict=True):
        curves = [c.lines[0] for c in ax.containers if len(c.lines[0].get_xdata()) > 1]
        colours = [c.get_color() for c in curves]
        expected = [colour(1)] if "depth=2" in title else [colour(0), colour(1)]
        assert colours == expected, title


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [(0.57, 0.65, ["0.58", "0.6", "0.62", "0.64"]), (0.69, 0.82, ["0.7", "0.75", "0.8"])],
)
def test_a_narrow_log_axis_has_round_evenly_spaced_ticks(lo, hi, expected):
    fig, ax = plt.subplots()
    ax.plot([1, 2], [lo, hi])
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    log_ticks(ax.yaxis)
    fig.canvas.draw()
    ticks = [t for t in ax.get_yticks() if lo <= t <= hi]
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels == expected
    assert np.allclose(np.diff(ticks), np.diff(ticks)[0])
    plt.close(fig)


def test_tick_labels_stay_distinct_on_a_very_narrow_span():
    fig, ax = plt.subplots()
    ax.plot([1, 2], [1.0011, 1.0016])
    ax.set_yscale("log")
    ax.set_ylim(1.0011, 1.0016)
    log_ticks(ax.yaxis)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert len(labels) >= 2 and len(set(labels)) == len(labels), labels
    plt.close(fig)


def test_the_headline_says_what_its_means_are_over():
    from agd_ray.analysis.headline import over

    row = {"architectures": 12, "seeds": 1, "swept": ["depth", "width", "batch_size"]}
    assert over(row) == "12 settings of depth, width, batch_size x 1 seed"
    assert over({"architectures": 1, "seeds": 5, "swept": []}) == "1 setting x 5 seeds"


def test_the_quickstart_like_headline_names_its_swept_keys(tmp_path):
    from agd_ray.analysis.headline import headline_text

    out = tmp_path / "syn"
    synthetic_sweep(out, "sweep.grid.model.width=[16, 64, 256, 1024]")
    (row,) = Report(out).headline
    assert "(means over 4 settings of width x 2 seeds;" in headline_text(row)


def test_a_log_axis_over_many_decades_labels_every_few_decades():
    fig, ax = plt.subplots()
    ax.plot([1, 2], [1e-3, 1e12])
    ax.set_yscale("log")
    ax.set_ylim(1e-3, 1e12)
    log_ticks(ax.yaxis)
    fig.canvas.draw()
    ticks = [t for t in ax.get_yticks() if 1e-3 <= t <= 1e12]
    assert 3 <= len(ticks) <= 12 and ticks[0] < 1 and ticks[-1] > 1e9  # the whole span
    plt.close(fig)


def test_the_headline_names_only_the_keys_that_vary(tmp_path):
    from agd_ray.analysis.headline import headline_text

    out = tmp_path / "syn"
    widths = "sweep.grid.model.width=[16, 64, 256, 1024]"
    synthetic_sweep(out, widths, "sweep.grid.model.depth=[2]")  # depth: one value
    (row,) = Report(out).headline
    assert "(means over 4 settings of width x 2 seeds;" in headline_text(row)


def test_a_figure_legend_is_cut_to_the_columns_its_figure_holds(tmp_path):
    """One panel (only the width is swept) with four widths: the legend under it
    takes the rows it needs instead of running past both edges."""
    out = tmp_path / "one"
    synthetic_sweep(out, "sweep.grid={model.width: [64, 128, 256, 512]}")
    report = Capture(out)
    report.out.mkdir(parents=True, exist_ok=True)
    report.fits["lr_transfer"] = {"adam": compare.lr_transfer(report.trials, "adam")}
    figures_compare.lr_transfer(report)
    assert len(report.seen["lr_transfer_adam.png"]["axes"]) == 1
    assert len(report.seen["lr_transfer_adam.png"]["legend"]) == 5
    assert report.tick_problems == []


def test_a_legend_past_the_figures_edge_is_reported():
    fig, ax = plt.subplots(figsize=(3, 2))
    lines = [ax.plot([1, 2], [i, i + 1], label=f"a long label number {i}")[0] for i in range(4)]
    fig.legend(lines, [ln.get_label() for ln in lines], loc="lower center", ncols=4)
    assert any("runs past" in p for p in tick_problems(fig))
    fig.legends[0].remove()
    figure_legend(fig, lines, [ln.get_label() for ln in lines], ncols=4)
    assert tick_problems(fig) == [] and len(fig.legends) == 1
    plt.close(fig)


def test_the_eta_figure_draws_agds_variants_beside_it(tmp_path):
    """Spectral AGD reports its eta as AGD does: both are drawn, a line style each."""
    out = tmp_path / "family"
    synthetic_sweep(out, "sweep.grid.model.width=[64, 256]", lrs=[1e-2])
    report = Capture(out)
    report.out.mkdir(parents=True)
    variant = report.trials["optimizer.name"] == "adam"
    report.trials.loc[variant, "optimizer.name"] = "agd_spectral"
    ids = report.trials.loc[variant, "trial_id"]
    rows = report.epochs["trial_id"].isin(ids)
    report.epochs.loc[rows, "eta_mean"] = 0.3 + 0.01 * report.epochs.loc[rows, "epoch"]
    figures_compare.eta(report)
    seen = report.seen["eta.png"]
    assert seen["legend"] == [
        "agd width=64",
        "agd width=256",
        "agd_spectral width=64",
        "agd_spectral width=256",
    ]
    (ax,) = seen["axes"]
    assert [line.get_linestyle() for line in ax.lines] == ["-", "-", "--", "--"]
    assert "agd, agd_spectral: a line style each" in report.figures[-1][1]


def test_panels_wrap_after_two_columns_and_a_long_title_is_reported():
    fig, axes = panels(4, 3, 2)
    assert len(axes) == 4 and fig.get_size_inches().tolist() == [6, 4]
    assert [ax.get_subplotspec().rowspan.start for ax in axes] == [0, 0, 1, 1]
    axes[0].plot([1, 2], [1, 2])
    axes[0].set_title("a title far too long for a panel three inches wide " * 2)
    assert any(p.startswith("title") for p in tick_problems(fig))
    axes[0].set_title(wrap_title(axes[0].get_title(), 2.8, 12))
    fig.tight_layout()
    assert not any(p.startswith("title") for p in tick_problems(fig))
    plt.close(fig)
