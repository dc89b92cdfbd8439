"""Figure layout, and the check that asks matplotlib what it will draw before a
figure is saved: panels that wrap after two columns, one legend for a figure sized to
its width, titles wrapped to their panel; and every axis with numeric tick labels,
no legend or title cut by the figure's edge.

    fig, axes = panels(len(settings), 5.2, 4)         # at most 2 a row
    figure_legend(fig, handles, labels, ncols=4)      # as many columns as fit
    problems = tick_problems(fig)                     # [] when the figure reads whole
"""

from __future__ import annotations

import re
import textwrap

from agd_ray.analysis.plotting import plt

_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?[kMGT]?%?$")


def _is_number(text: str) -> bool:
    text = text.replace("\u2212", "-").replace("$", "").replace("\\mathdefault{", "")
    text = text.replace("}", "").replace("{", "").strip()
    if re.fullmatch(r"[-+]?\d+(\.\d*)?\^?[-+]?\d*", text) and "^" in text:  # 10^{2}
        return True
    return bool(_NUMBER.match(text))


def numeric_tick_labels(axis) -> list[str]:
    """The numeric labels matplotlib will draw on ``axis`` (visible ticks only)."""
    lo, hi = sorted(axis.get_view_interval())
    out = []
    for tick in axis.get_major_ticks() + axis.get_minor_ticks():
        text = tick.label1.get_text()
        if tick.label1.get_visible() and text and lo <= tick.get_loc() <= hi and _is_number(text):
            out.append(text)
    return out


def figure_legend(fig, handles, labels, ncols: int, fontsize: float = 8) -> None:
    """One legend for the whole figure, under its panels, in as many columns (at most
    ``ncols``) as the figure's width holds: a one-panel figure gets fewer."""
    renderer = fig.canvas.get_renderer()
    for n in range(max(min(ncols, len(labels)), 1), 0, -1):
        legend = fig.legend(
            handles, labels, loc="lower center", ncols=n, fontsize=fontsize, frameon=False
        )
        if n == 1 or legend.get_window_extent(renderer).width <= 0.98 * fig.bbox.width:
            return
        legend.remove()


def panels(n: int, width: float, height: float, cols: int = 2):
    """A figure of ``n`` panels of ``width`` x ``height`` inches, at most ``cols`` to a
    row (a page scales a wide row down to its width, and every label with it).
    Returns (figure, the n axes in reading order); spare cells are hidden."""
    cols = max(min(n, cols), 1)
    rows = -(-n // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in grid.flat[n:]:
        ax.set_visible(False)
    return fig, list(grid.flat[:n])


def wrap_title(text: str, inches: float, fontsize: float) -> str:
    """``text`` with each line wrapped to what ``inches`` of ``fontsize`` type holds."""
    chars = max(int(inches * 72 / (0.55 * fontsize)), 20)
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def cut_by_edge(fig) -> list[str]:
    """Legends and titles of ``fig`` (its own, its axes') that run past its edges."""
    edge = fig.bbox
    problems = []
    for ax in fig.axes:
        title = ax.title
        if ax.get_visible() and title.get_text():
            box = title.get_window_extent()
            if box.x0 < edge.x0 - 1 or box.x1 > edge.x1 + 1 or box.y1 > edge.y1 + 1:
                problems.append(f"title {title.get_text()[:40]!r}... runs past the figure's edge")
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)]:
        if legend is None or not legend.get_visible():
            continue
        box = legend.get_window_extent()
        if box.x0 < edge.x0 - 1 or box.x1 > edge.x1 + 1 or box.y0 < edge.y0 - 1:
            first = legend.get_texts()[0].get_text() if legend.get_texts() else ""
            problems.append(f"legend ({first!r}, ...) runs past the figure's edge")
    return problems


def tick_problems(fig) -> list[str]:
    """Axes of ``fig`` with fewer than two numeric tick labels (empty axes skipped),
    and legends or titles cut by the figure's edge."""
    fig.canvas.draw()
    problems = cut_by_edge(fig)
    for ax in fig.axes:
        if not ax.get_visible() or not ax.has_data() or ax.get_label() == "<colorbar>":
            continue
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            labels = numeric_tick_labels(axis)
            if len(labels) < 2:
                problems.append(f"{ax.get_title() or 'axes'}: {name} axis labels {labels}")
    return problems
