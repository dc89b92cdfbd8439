"""``report.html``: one self-contained page (figures embedded) that leads with the
headline, AGD against each tuned baseline, then the figures with their captions,
then the fitted laws and the best-of-grid table."""

from __future__ import annotations

import base64
import html
import json
import math

from agd_ray.analysis.grid_edge import edge_where
from agd_ray.analysis.headline import each_seed, headline_text
from agd_ray.sweep.summary import format_summary, summary_from_trials

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;"
    "color:#222}img{max-width:100%;border:1px solid #ddd}figure{margin:2em 0}"
    "figcaption{color:#444;font-size:.92em;margin-top:.4em}table{border-collapse:collapse;"
    "font-size:.85em;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
    "th{background:#f2f2f2}td.l,th.l{text-align:left}.headline{background:#f5f9ff;"
    "border-left:4px solid #3572b0;padding:.6em 1em}pre{background:#f4f4f4;padding:1em;"
    "overflow:auto;font-size:.8em}"
)


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


def _ci(value, interval) -> str:
    if value is None:
        return "-"
    if not interval:
        return _num(value, 3)
    return f"{_num(value, 3)} [{_num(interval[0], 3)}, {_num(interval[1], 3)}]"


def _edges(counts: dict[str, int], groups: int) -> str:
    """The table's "chosen at grid edge" cell: "2 of 12 (lr highest in 2)"."""
    if not counts:
        return "-"
    return f"{counts['settings']} of {groups} ({edge_where(counts)})"


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    def cells(values, tag):
        return "".join(
            f"<{tag}{' class=l' if i < left else ''}>{html.escape(str(v))}</{tag}>"
            for i, v in enumerate(values)
        )

    body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    return f"<table><tr>{cells(header, 'th')}</tr>{body}</table>"


def headline_section(report) -> list[str]:
    parts = ["<h2>Headline: AGD's single untuned run against each tuned baseline</h2>"]
    if not report.headline:
        parts.append("<p>This sweep has no tuned baseline beside AGD.</p>")
        return parts
    metric = report.points.attrs.get("metric", "val_loss")
    held_out = (
        "the corpus's validation files"
        if report.language
        else "a share of the training data held out, <code>data.val_fraction</code>"
    )
    unit = "tokens" if report.language else "samples"
    parts.append(
        "<p>Each baseline's best of grid is <b>chosen on the validation split</b> "
        f"(lowest {html.escape(metric)}; {held_out}) and <b>scored on the test split</b>. "
        f"Compute counts 6 x params x {unit}, and a baseline's includes its whole grid.</p>"
    )
    parts += [f"<p class=headline>{html.escape(headline_text(row))}</p>" for row in report.headline]
    rows = []
    for h in report.headline:
        c = h["compute"]
        mult = (
            "never reaches it"
            if c["multiplier"] is None
            else _ci(c["multiplier"], c["multiplier_ci"])
        )
        if c["multiplier"] is not None and c.get("per_seed") and not c["multiplier_ci"]:
            mult += f" (each seed alone: {each_seed(c)})"

        rows.append(
            [
                h["baseline"],
                h["groups"],
                h["grid_runs"],
                *(
                    (f"{h['agd_test_bits']:.3f}", f"{h['baseline_test_bits']:.3f}")
                    if h.get("language")
                    else (
                        f"{100 * h['agd_test_acc']:.1f} %",
                        f"{100 * h['baseline_test_acc']:.1f} %",
                    )
                ),
                _num(h["agd_test_loss"]),
                _num(h["baseline_test_loss"]),
                f"{h['agd_wins']} / {h['groups']}",
                _edges(h.get("at_edge", {}), h["groups"]),
                mult,
            ]
        )
    header = [
        "baseline",
        "settings",
        "grid runs",
        *(
            ("AGD test bits/token", "baseline test bits/token")
            if any(h.get("language") for h in report.headline)
            else ("AGD test acc", "baseline test acc")
        ),
        "AGD test loss",
        "baseline test loss",
        "AGD lower loss",
        "chosen at grid edge",
        "compute multiplier",
    ]
    parts.append(_table(header, rows))
    return parts


def fit_rows(fits: dict) -> tuple[list[str], list[list]]:
    """(header, rows) of the fitted-law table: one row per law in ``fits.json``."""
    rows = []
    for name, by_optimizer in fits.items():
        if not name.startswith("test_loss_vs_"):
            continue
        for optimizer, entries in by_optimizer.items():
            for e in entries:
                fixed = " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in e["held_fixed"].items())
                hold = e.get("holdout_rel_error")
                law = e["status"] == "fit"  # a fit that is not a law prints no numbers: its
                # reason says why (fits.json keeps what the optimiser returned, by status)
                rows.append(
                    [
                        name.removeprefix("test_loss_vs_"),
                        optimizer,
                        fixed or "-",
                        e["status"],
                        *(
                            _ci(e.get(k), e.get(f"{k}_ci")) if law else "-"
                            for k in ("E", "A", "alpha")
                        ),
                        e["n_points"],
                        e["n_x"],
                        "-" if hold is None or not law else f"{100 * hold:.2g} %",
                        e.get("reason") or "",
                    ]
                )
    header = [
        "x",
        "optimizer",
        "held fixed",
        "status",
        "E [95 % CI]",
        "A [95 % CI]",
        "alpha [95 % CI]",
        "points",
        "x values",
        "hold-out error",
        "why not a law",
    ]
    return header, rows


def fits_section(fits: dict) -> list[str]:
    header, rows = fit_rows(fits)
    if not rows:
        return []
    return [
        "<h2>Fitted laws: L = E + A x<sup>-alpha</sup></h2>",
        "<p>Huber loss on log residuals from several starting points; 95 % bootstrap intervals "
        "(resampling whole seeds when there are five or more, else points: with 2-3 seeds a "
        "seed bootstrap has only 3-10 distinct resamples and its intervals cover the truth "
        "far less than 95 % of the time); the hold-out error is the relative error of "
        "the law refitted without the largest x when it predicts that x. A fit with fewer than "
        "4 x values, on a bound, or with an alpha interval wider than alpha is not a law, and "
        "its row gives the reason instead of numbers.</p>",
        _table(header, rows, left=4),
    ]


def render(report) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in report.trials["status"].value_counts().items())
    title = f"agd-ray report: {html.escape(report.sweep_dir.name)}"
    parts = [
        "<!doctype html><html lang=en><meta charset='utf-8'>",
        f"<title>{title}</title><style>{STYLE}</style>",
        f"<h1>{title}</h1>",
        f"<p>{len(report.trials)} trials: {counts}.</p>",
        *headline_section(report),
        "<h2>Figures</h2>",
    ]
    for name, caption in report.figures:
        data = base64.b64encode((report.out / name).read_bytes()).decode()
        parts.append(
            f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
            f"<figcaption><b>{html.escape(name)}</b>: {html.escape(caption)}</figcaption></figure>"
        )
    parts += fits_section(report.fits)
    parts += [
        "<h2>Best of grid per setting</h2>",
        f"<pre>{html.escape(format_summary(summary_from_trials(report.trials)))}</pre>",
        "<details><summary>fits.json</summary>",
        f"<pre>{html.escape(json.dumps(report.fits, indent=2))}</pre></details></html>",
    ]
    return "\n".join(parts)
