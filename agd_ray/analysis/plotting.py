"""Figure conventions for the report: every axis carries numeric tick labels, one
colour per series, error bars over seeds.

    ax.set_xscale("log"); ticks_at(ax.xaxis, widths)   # discrete keys: their values
    log_ticks(ax.yaxis)                               # continuous: 1-2-5 or spread

Panels, figure legends and the check before saving: ``agd_ray.analysis.layout``.
"""

from __future__ import annotations

import json
import math

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
    """Ticks at ``ticks``, labelled ``compact``ly, or with more digits where two
    compact labels would read the same (1.0012 and 1.0014 are not both "1")."""
    ticks = list(ticks)
    axis.set_major_locator(mticker.FixedLocator(ticks))
    labels = [compact(t) for t in ticks]
    digits = 4
    while len(set(labels)) < len(labels) and digits <= 12:
        labels = [f"{t:.{digits}g}" for t in ticks]
        digits += 1
    axis.set_major_formatter(mticker.FixedFormatter(labels))
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
    else every integer multiple, else (a span under about 2x, where a log axis is
    nearly linear) evenly spaced round values: 0.58, 0.6, 0.62, 0.64."""
    lo, hi = sorted(axis.get_view_interval())
    if not (lo > 0 and math.isfinite(hi)):
        return
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for mantissas in ((1,), (1, 2, 5), tuple(range(1, 10))):
        ticks = [m * 10.0**d for d in decades for m in mantissas if lo <= m * 10.0**d <= hi]
        if 3 <= len(ticks) <= 12:
            return _fixed(axis, ticks)
    if hi / lo > 3:  # over a dozen decades: every k-th decade
        powers = [10.0**d for d in decades if lo <= 10.0**d <= hi]
        return _fixed(axis, powers[:: math.ceil(len(powers) / 12)])
    for bins in (5, 8, 12):  # at least three labels where the view allows
        steps = mticker.MaxNLocator(nbins=bins, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
        ticks = sorted({float(f"{t:.12g}") for t in steps if lo <= t <= hi})
        if len(ticks) >= 3:
            break
    _fixed(axis, ticks)


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


# offsets (in points) tried for a label, nearest first: the first ring touches the
# marker; labels further out are joined to their point by a thin line
_RINGS = (4, 12, 22, 34, 48)
_DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))


def _overlap(a, b) -> float:
    """Area shared by two (x0, y0, x1, y1) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _spot(x, y, w, h, px, taken, frame, directions) -> tuple[int, int, int, tuple]:
    """(ring, dx, dy, box) of the first free spot for a w x h label of the point at
    display (x, y): its corner (or edge middle) nearest the point, ring's radius away
    in direction (dx, dy); free: inside ``frame``, over none of the ``taken`` boxes.
    With none free, the least covered (out of the frame counts 10x)."""
    best = None
    for ring, radius in enumerate(_RINGS):
        for dx, dy in directions:
            cx, cy = x + dx * radius * px, y + dy * radius * px
            x0 = cx if dx > 0 else cx - w if dx < 0 else cx - w / 2
            y0 = cy if dy > 0 else cy - h if dy < 0 else cy - h / 2
            box = (x0, y0, x0 + w, y0 + h)
            within = frame[0] <= x0 and box[2] <= frame[2] and frame[1] <= y0 and box[3] <= frame[3]
            cost = 0.0 if within else 10 * (w * h - _overlap(box, frame) + 1)
            cost += sum(_overlap(box, t) for t in taken)
            if cost == 0:
                return ring, dx, dy, box
            if best is None or cost < best[0]:
                best = (cost, ring, dx, dy, box)
    return best[1:]


def label_points(
    ax, xs, ys, texts, avoid=(), above=False, fontsize: float = 6, marker_pt: float = 4
) -> None:
    """Name each point beside it, with no name over another, over a point or outside
    the axes: each name (in order) takes the first free spot of rings of offsets
    around its point, nearest first (``_spot``), and is joined to its point by a thin
    line when it is not next to it. ``avoid``: more to keep clear, as data boxes
    (x0, y0, x1, y1), e.g. error bars, padded like the markers; ``above``: right above
    the point is tried first (a point topping a column).

    Call once the axes' limits and size are final (after ``fig.tight_layout()``):
    spots are found in display space. The names are left out of later layouts.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72  # pixels per point
    f = ax.get_window_extent(renderer)
    frame = (f.x0, f.y0, f.x1, f.y1)
    points = ax.transData.transform(np.column_stack([xs, ys]))
    boxes = [(x, y, x, y) for x, y in points]
    for x0, y0, x1, y1 in avoid:
        (a, b), (c, d) = ax.transData.transform([(x0, y0), (x1, y1)])
        boxes.append((min(a, c), min(b, d), max(a, c), max(b, d)))
    half = marker_pt * px / 2 + 1
    taken = [(x0 - half, y0 - half, x1 + half, y1 + half) for x0, y0, x1, y1 in boxes]
    directions = ((0, 1), *_DIRECTIONS) if above else _DIRECTIONS
    for (x, y), at, text in zip(points, np.column_stack([xs, ys]), texts, strict=True):
        if not (frame[0] <= x <= frame[2] and frame[1] <= y <= frame[3]):
            continue  # NaN, or out of view: not drawn, so not named
        probe = ax.text(0, 0, text, fontsize=fontsize)
        size = probe.get_window_extent(renderer)
        probe.remove()
        ring, dx, dy, box = _spot(x, y, size.width, size.height, px, taken, frame, directions)
        taken.append(box)
        label = ax.annotate(
            text,
            tuple(at),
            xytext=(dx * _RINGS[ring], dy * _RINGS[ring]),
            textcoords="offset points",
            ha={1: "left", -1: "right", 0: "center"}[dx],
            va={1: "bottom", -1: "top", 0: "center"}[dy],
            fontsize=fontsize,
            color="0.2",
            arrowprops=dict(arrowstyle="-", lw=0.4, color="0.55", shrinkA=0, shrinkB=2)
            if ring
            else None,
        )
        label.set_in_layout(False)


def _steps(text, batch_size) -> list:
    """A batch schedule's (epoch, batch) steps from epoch 0: before its first listed
    epoch the run uses ``train.batch_size`` (named so when not given)."""
    value = json.loads(text) if isinstance(text, str) else text
    if value and value[0][0] > 0:
        first = int(batch_size) if batch_size is not None else "batch_size"
        value = [[0, first], *value]
    return value


def schedule_name(text: str, batch_size=None) -> str:
    """``[[0,64],[10,320]]`` -> "batch 64→320 (epochs 0, 10)"; ``null`` -> "constant
    batch 64" (``batch_size``: the trial's ``train.batch_size``)."""
    value = _steps(text, batch_size)
    if not value:
        return "constant batch" + (f" {int(batch_size)}" if batch_size is not None else "")
    sizes = "→".join(str(b) for _, b in value)
    return f"batch {sizes} (epochs {', '.join(str(e) for e, _ in value)})"


def schedule_short(text: str, batch_size=None) -> str:
    """A point's name: "constant batch", or "ramp 64→320→1600"."""
    value = _steps(text, batch_size)
    return "ramp " + "→".join(str(b) for _, b in value) if value else "constant batch"
