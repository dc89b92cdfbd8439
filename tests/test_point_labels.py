"""Points named in a figure: no name over another, over a point or outside the axes,
however the points crowd (the AGD-vs-baselines figure names each architecture)."""

import itertools
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Annotation, Text

from agd_ray.analysis import figures_compare
from agd_ray.analysis.plotting import label_points, plt


def label_boxes(ax):
    """The drawn box of each point's name (its text only, not its leader line)."""
    renderer = ax.figure.canvas.get_renderer()
    return [Text.get_window_extent(t, renderer) for t in ax.texts if isinstance(t, Annotation)]


def assert_clear(ax, xs, ys, marker_pt=4):
    """No two names overlap, none covers a point, all lie inside the axes."""
    ax.figure.canvas.draw()
    boxes = label_boxes(ax)
    frame = ax.get_window_extent()
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)
    half = marker_pt * ax.figure.dpi / 72 / 2
    for x, y in ax.transData.transform(np.column_stack([xs, ys])):
        for box in boxes:
            assert not (
                box.x0 < x + half and x - half < box.x1 and box.y0 < y + half and y - half < box.y1
            )
    for box in boxes:
        assert (
            frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        )


def figure_of(runs):
    """The AGD-vs-baselines figure of (architecture, seed, optimizer, test accuracy)
    runs: the report stub it was drawn for, and what it saved."""
    rows = [
        {"group": f"{arch};seed={seed}", "optimizer.name": o, "test_acc": a, "test_loss": 1 - a}
        for arch, seed, o, a in runs
    ]
    saved = {}
    r = SimpleNamespace(
        best=pd.DataFrame(rows),
        language=False,
        save=lambda fig, name, caption: saved.update(fig=fig, caption=caption),
    )
    figures_compare.agd_vs_baselines(r)
    return r, saved


def test_crowded_points_get_names_that_do_not_overlap():
    rng = np.random.default_rng(0)
    # worse than the quickstart's worst case: seven architectures on one spot, a tight
    # cluster, points near the axes' edges, and some spread out
    xs = np.r_[
        [0.69, 0.69, 0.691, 0.692, 0.69, 0.689, 0.69],
        0.5 + 0.01 * rng.random(4),
        [0.351, 0.8],
        0.36 + 0.43 * rng.random(4),
    ]
    ys = np.r_[
        [0.70, 0.70, 0.701, 0.699, 0.7, 0.70, 0.702],
        0.5 + 0.01 * rng.random(4),
        [0.79, 0.352],
        0.36 + 0.43 * rng.random(4),
    ]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot(xs, ys, "o", ms=4)
    ax.set_xlim(0.34, 0.81)
    ax.set_ylim(0.34, 0.81)
    fig.tight_layout()
    names = [f"d{2 ** (i % 3 + 1)} w{64 * 4 ** (i % 2)} b{64 * 2**i}" for i in range(len(xs))]
    label_points(ax, xs, ys, names)
    assert len(label_boxes(ax)) == len(xs)
    assert_clear(ax, xs, ys)
    # a name away from its point is joined to it; one beside it is not
    joined = [t.arrow_patch is not None for t in ax.texts]
    assert any(joined) and not all(joined)
    plt.close(fig)


def test_agd_vs_baselines_names_each_architecture_once_clear_of_every_point():
    archs = [f"model.depth={d};model.width={w}" for d in (2, 4, 8) for w in (64, 256)]
    rng = np.random.default_rng(1)
    runs = [  # crowded: every point within 1 point
        (arch, 0, optimizer, 0.5 + 0.01 * rng.random())
        for arch, optimizer in itertools.product(archs, ("agd", "adam", "sgd", "muon"))
    ]
    r, saved = figure_of(runs)
    fig = saved["fig"]
    best = r.best.assign(arch=r.best["group"].str.replace(";seed=0", ""))
    for ax, metric in zip(fig.axes, ("test_acc", "test_loss"), strict=True):
        assert len(label_boxes(ax)) == len(archs)  # once per architecture, not per baseline
        agd = best[best["optimizer.name"] == "agd"].set_index("arch")[metric]
        points = best.assign(x=best["arch"].map(agd))
        points = points[points["optimizer.name"] != "agd"]
        assert_clear(ax, points["x"], points[metric])
    assert "a grey line joins them" in saved["caption"] and "named by" in saved["caption"]
    plt.close(fig)


def test_names_spell_out_keys_without_a_letter_of_their_own():
    # model.bias and train.batch_size both start with b: only batch size has the letter
    arch = "model.depth=4;model.width=256;train.batch_size=64;model.bias=true"
    assert figures_compare.initials(arch) == "d4 w256 b64 bias=true"
    assert figures_compare._letters([arch]) == " (d depth, w width, b batch size)"
    assert figures_compare._letters(["model.bias=false"]) == ""


def test_a_name_points_at_its_marker_not_at_the_end_of_its_error_bar():
    # two seeds: error bars; one baseline: each name belongs to one marker
    runs = [  # a spread over seeds: error bars of 0.02
        (f"model.depth={d}", seed, optimizer, acc + 0.03 * seed)
        for d, seed in itertools.product((2, 4, 8), (0, 1))
        for optimizer, acc in (("agd", 0.5 + 0.02 * d), ("adam", 0.6 + 0.01 * d))
    ]
    r, saved = figure_of(runs)
    ax = saved["fig"].axes[0]
    best = r.best.assign(arch=r.best["group"].str.split(";").str[0])
    means = best.groupby(["arch", "optimizer.name"])["test_acc"].mean().unstack()
    anchors = {t.get_text(): t.xy for t in ax.texts if isinstance(t, Annotation)}
    assert set(anchors) == {"d2", "d4", "d8"}
    for arch, row in means.iterrows():
        assert anchors[arch.replace("model.depth=", "d")] == pytest.approx(
            (row["agd"], row["adam"])
        )
    plt.close(saved["fig"])


def test_a_study_that_sweeps_no_key_names_no_point():
    assert figures_compare.initials("") == ""
    assert figures_compare.initials('model.arch="resnet"') == "arch=resnet"
