"""Figure conventions for the report: every axis carries numeric tick labels, one
colour per series, error bars over seeds, and a check that asks matplotlib what it
will draw before a figure is saved.

    ax.set_xscale("log"); ticks_at(ax.xaxis, widths)   # discrete keys: their values
    log_ticks(ax.yaxis)                               # continuous: 1-2-5 or spread
    problems = tick_problems(fig)                     # [] when every axis is labelled
"""

from __future__ import annotations

import math
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import numpy as np  # noqa: E402

COLOURS = plt.get_cmap("tab10").colors


def colour(i: int | str):
    """The i-th series colour (a matplotlib colour name passes through)."""
    return i if isinstance(i, str) else COLOURS[i % len(COLOURS)]


def compact(value: float) -> str:
    """A short tick label: 64, 0.5, 1e-3, 144k, 2.1M."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    magnitude = abs(value)
    if magnitude >= 1e4:
        for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
            if magnitude >= div:
                return f"{value / div:.3g}{unit}"
    if magnitude >= 100 and float(value).is_integer():
        return f"{int(value)}"
    if magnitude < 1e-2:
        mantissa, exponent = f"{value:.2e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.3g}"


def _fixed(axis, ticks) -> None:
    axis.set_major_locator(mticker.FixedLocator(list(ticks)))
    axis.set_major_formatter(mticker.FuncFormatter(lambda v, _: compact(v)))
    axis.set_minor_formatter(mticker.NullFormatter())


def ticks_at(axis, values, max_ticks: int = 12) -> None:
    """Ticks at the data's own values (widths, depths, learning rates, batch sizes);
    with too many of them, a spread of them."""
    values = np.unique(np.asarray([v for v in values if v is not None], float))
    values = values[np.isfinite(values)]
    if len(values) > max_ticks:
        values = values[np.linspace(0, len(values) - 1, max_ticks).round().astype(int)]
    if len(values) > 2 and axis.get_scale() == "log" and values[0] > 0:
        # labels closer than 1/25 of the axis would print over each other
        logs = np.log10(values)
        gap = (logs[-1] - logs[0]) / 25
        keep = [0]
        for i in range(1, len(values)):
            if logs[i] - logs[keep[-1]] >= gap:
                keep.append(i)
        values = values[keep]
    _fixed(axis, values)


def legend_below(ax, **kwargs) -> None:
    """A legend under the axes, where it cannot hide data."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=6, frameon=False, **kwargs)


def log_ticks(axis) -> None:
    """Numeric labels on a continuous log axis of any span: 1-2-5 steps per decade,
    else every integer multiple, else four values spread over the view (< 2x span)."""
    lo, hi = sorted(axis.get_view_interval())
    if not (lo > 0 and math.isfinite(hi)):
        return
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for mantissas in ((1,), (1, 2, 5), tuple(range(1, 10))):
        ticks = [m * 10.0**d for d in decades for m in mantissas if lo <= m * 10.0**d <= hi]
        if 3 <= len(ticks) <= 12:
            return _fixed(axis, ticks)
    spread = np.geomspace(lo, hi, 6)[1:-1]
    _fixed(axis, [float(f"{t:.2g}") for t in spread])


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


def tick_problems(fig) -> list[str]:
    """Axes of ``fig`` with fewer than two numeric tick labels (empty axes skipped)."""
    fig.canvas.draw()
    problems = []
    for ax in fig.axes:
        if not ax.get_visible() or not ax.has_data() or ax.get_label() == "<colorbar>":
            continue
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            labels = numeric_tick_labels(axis)
            if len(labels) < 2:
                problems.append(f"{ax.get_title() or 'axes'}: {name} axis labels {labels}")
    return problems


def errorbar(ax, groups, label: str, i, marker: str = "o", line: bool = True, hollow=False):
    """Mean over seeds at each x with the seeds' standard deviation as error bars
    (none with one seed). ``groups`` maps x -> list of values."""
    xs = np.array(sorted(groups), float)
    means = np.array([np.mean(groups[x]) for x in sorted(groups)])
    sds = np.array([np.std(groups[x], ddof=1) if len(groups[x]) > 1 else 0 for x in sorted(groups)])
    ax.errorbar(
        xs,
        means,
        yerr=sds if sds.any() else None,
        color=colour(i),
        marker=marker,
        ms=8 if hollow else 4,
        mfc="none" if hollow else colour(i),
        lw=1 if line else 0,
        elinewidth=1,
        capsize=2,
        label=label,
    )
    return xs, means
