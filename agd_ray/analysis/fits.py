"""Scaling-law fits that say when they are not laws: L = E + A x^-alpha fitted as in
Hoffmann et al. 2022 ("Chinchilla", approach 3) and Epoch AI's replication (Huber loss
on log residuals, L-BFGS-B from a grid of starts, bootstrap intervals), and the critical
batch S = S_min (1 + B_crit / B) (Shallue et al. 2018; McCandlish et al. 2018)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import product

import numpy as np
from scipy.optimize import least_squares, minimize
from scipy.special import huber

DELTA = 1e-3  # Huber threshold on log residuals (Chinchilla)
ALPHA_MAX = 5.0
E_FLOOR = 1e-4  # E's lower bound as a fraction of min y: an E there counts as 0
A_SPAN = 1e8  # A at the geometric-mean x lies in [max y / A_SPAN, max y * A_SPAN]
B_SPAN = 1e3  # B_crit lies in [min B / B_SPAN, max B * B_SPAN]
BOUND_TOL = 1e-3  # this close to a bound (fraction of the parameter's range) is on it
MIN_SEEDS = 5  # fewer seeds give too few distinct resamples: bootstrap points instead
MIN_DRAWS = 0.5  # fewer usable bootstrap resamples than this fraction: no interval


def power_law(x, E, A, alpha):
    """L = E + A x^-alpha, vectorised over x."""
    return E + A * np.power(np.asarray(x, float), -alpha)


@dataclass
class PowerLawFit:
    """L = E + A x^-alpha; ``status`` "fit" or "unidentified" (then ``reason`` says why)."""

    status: str
    reason: str | None
    E: float | None
    A: float | None
    alpha: float | None
    E_ci: tuple[float, float] | None
    A_ci: tuple[float, float] | None
    alpha_ci: tuple[float, float] | None
    n_points: int
    n_x: int
    n_seeds: int
    holdout_rel_error: float | None

    @property
    def identified(self) -> bool:
        return self.status == "fit"

    def to_dict(self) -> dict:
        """JSON-ready: plain floats and lists, NaN as None."""
        return {k: _plain(v) for k, v in asdict(self).items()}

    def predict(self, x) -> np.ndarray:
        """The fitted curve at x (NaN when no fit could be computed)."""
        if self.alpha is None:
            return np.full(np.shape(x), np.nan)
        return np.asarray(power_law(x, self.E, self.A, self.alpha))

    def equation(self) -> str:
        """E.g. "L = 0.3 + 2·x^-0.5", 3 significant digits."""
        if self.alpha is None:
            return "no fit"
        return f"L = {self.E:.3g} + {self.A:.3g}·x^-{self.alpha:.3g}"

    def label(self) -> str:
        """Legend text: equation, alpha's interval, hold-out error, why not a law."""
        if self.alpha is None:
            return f"unidentified: {self.reason}"
        parts = [self.equation()]
        if self.alpha_ci is not None:
            parts.append(f"α 95% CI [{self.alpha_ci[0]:.3g}, {self.alpha_ci[1]:.3g}]")
        if self.holdout_rel_error is not None:
            parts.append(f"hold-out err {100 * self.holdout_rel_error:.2g}%")  # 0.029%, 1.8%
        text = ", ".join(parts)
        return text if self.identified else f"{text} (unidentified: {self.reason})"


def _plain(v):
    if isinstance(v, tuple | list):
        return [_plain(u) for u in v]
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(v) else None
    return int(v) if isinstance(v, np.integer) else v


def _clean(x, y, seeds, min_x: int, n_params: int, x_name: str, model: str):
    """Drop non-finite points; also the reason the rest cannot be fitted, or None."""
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    seeds = np.zeros(len(x), int) if seeds is None else np.asarray(seeds).ravel()
    if not len(x) == len(y) == len(seeds):
        raise ValueError(f"x, y and seeds differ in length: {len(x)}, {len(y)}, {len(seeds)}")
    keep = np.isfinite(x) & np.isfinite(y)
    note = f" after dropping {int((~keep).sum())} non-finite points" if not keep.all() else ""
    x, y, seeds = x[keep], y[keep], seeds[keep]
    n_x, reason = len(np.unique(x)), None
    if np.any(x <= 0) or np.any(y <= 0):
        reason = f"{int(np.sum((x <= 0) | (y <= 0)))} points with x or y <= 0 (fit in log space)"
    elif n_x < min_x:
        reason = f"{n_x} distinct {x_name}{note}; a {n_params}-parameter {model} needs {min_x}"
    elif len(x) <= n_params:
        reason = f"{len(x)} points{note}; a {n_params}-parameter {model} needs more"
    return x, y, seeds, n_x, reason


def _on_bounds(theta, bounds, names) -> list[str]:
    """The parameters that ended within BOUND_TOL of their range from a bound."""
    hits = []
    for value, (lo, hi), (name, lo_text, hi_text) in zip(theta, bounds, names, strict=True):
        if value - lo <= BOUND_TOL * (hi - lo):
            hits.append(f"{name} ended on its lower bound {lo_text}")
        elif hi - value <= BOUND_TOL * (hi - lo):
            hits.append(f"{name} ended on its upper bound {hi_text}")
    return hits


def _bootstrap(x, seeds, refit: Callable, k: int, min_x: int, n_boot: int, rng_seed: int):
    """95 % percentile intervals of the k numbers refit(idx) returns, over resamples with
    replacement: of seeds (all their points) when there are >= MIN_SEEDS, else of
    points. Resamples with < min_x distinct x are skipped; if over MIN_DRAWS of them
    are, the intervals are None. Returns (intervals, number of usable resamples)."""
    groups = np.unique(seeds)
    if len(groups) >= MIN_SEEDS:
        members = [np.flatnonzero(seeds == g) for g in groups]
    else:
        members = [np.array([i]) for i in range(len(x))]
    rng = np.random.default_rng(rng_seed)
    draws, cache = [], {}  # each distinct resample is fitted once
    for _ in range(n_boot):
        picks = tuple(np.sort(rng.integers(len(members), size=len(members))))
        idx = np.concatenate([members[i] for i in picks])
        if len(np.unique(x[idx])) >= min_x:
            if picks not in cache:
                cache[picks] = refit(idx)
            draws.append(cache[picks])
    if not n_boot or len(draws) < MIN_DRAWS * n_boot:
        return [None] * k, len(draws)
    lo, hi = np.percentile(np.array(draws), [2.5, 97.5], axis=0)
    return list(zip(lo.tolist(), hi.tolist(), strict=True)), len(draws)


def _verdict(hits: list[str], n_draws: int, n_boot: int, what: str, checks) -> str | None:
    """Why the fit is not a law (None when it is): parameters on bounds, too few
    usable bootstrap resamples, or a (name, value, interval) whose interval is wider."""
    if hits:
        return "; ".join(hits)
    if n_boot and n_draws < MIN_DRAWS * n_boot:
        return f"only {n_draws} of {n_boot} bootstrap resamples had {what}"
    for name, value, ci in checks:
        if ci is not None and ci[1] - ci[0] > value:
            lo, hi = ci
            return f"{name}'s 95 % interval [{lo:.3g}, {hi:.3g}] is wider than {name} ({value:.3g})"
    return None


def _huber_loss(theta, lu, ly):
    """Mean Huber loss / DELTA of log(E + A_u u^-alpha) - log y, and its gradient."""
    e, a, alpha = theta
    pred = np.logaddexp(e, a - alpha * lu)
    r = pred - ly
    share_E = np.exp(e - pred)  # d pred / d e; 1 - share_E is d pred / d a
    g = np.clip(r, -DELTA, DELTA) / (DELTA * len(r))
    g_A = g * (1 - share_E)
    grad = np.array([(g * share_E).sum(), g_A.sum(), -(g_A * lu).sum()])
    return huber(DELTA, r).sum() / (DELTA * len(r)), grad


def _minimise(lu, ly, starts, bounds) -> list[np.ndarray]:
    """L-BFGS-B from each start; the end points, lowest objective first."""
    options = {"ftol": 1e-9, "gtol": 1e-6}
    runs = [
        minimize(_huber_loss, s, (lu, ly), "L-BFGS-B", jac=True, bounds=bounds, options=options)
        for s in starts
    ]
    return [r.x for r in sorted(runs, key=lambda r: r.fun)]


def fit_power_law(x, y, seeds=None, n_boot: int = 200, rng_seed: int = 0) -> PowerLawFit:
    """Fit L = E + A x^-alpha by Huber loss (delta 1e-3) on log residuals, minimised by
    L-BFGS-B from 48 starts over (log E, log A, alpha), with alpha in [0, 5] and E in
    [1e-4 min y, max y]; x is rescaled by its geometric mean. Intervals: bootstrap 95 %
    percentiles, over seeds when ``seeds`` has >= 5 distinct values, else over points.
    ``holdout_rel_error``: refit without the largest x, |prediction - mean y| / mean y
    there. "unidentified" (with a reason) when there are < 4 distinct x or no more
    points than parameters (no fit computed), a parameter ends on a bound, or alpha's
    interval is wider than alpha."""
    x, y, seeds, n_x, reason = _clean(x, y, seeds, 4, 3, "x values", "law")
    n_seeds = len(np.unique(seeds))
    if reason:
        return PowerLawFit("unidentified", reason, *[None] * 6, len(x), n_x, n_seeds, None)
    x0 = float(np.exp(np.log(x).mean()))
    lu, ly = np.log(x / x0), np.log(y)
    lo_y, hi_y, log_span = float(ly.min()), float(ly.max()), math.log(A_SPAN)
    bounds = [(lo_y + math.log(E_FLOOR), hi_y), (hi_y - log_span, hi_y + log_span), (0, ALPHA_MAX)]
    e_starts = lo_y + np.array([-0.05, -0.7, -2.3, -6.9])  # E = 0.95, 0.5, 0.1, 0.001 min y
    a_starts = float(np.median(ly)) + np.array([-2.3, 0.0, 1.0])
    grid = list(product(e_starts, a_starts, (0.0, 0.5, 1.0, 2.0)))

    def params(theta) -> tuple[float, float, float]:
        e, a, alpha = (float(v) for v in theta)
        return math.exp(e), math.exp(a) * x0**alpha, alpha

    ends = _minimise(lu, ly, grid, bounds)
    theta = ends[0]
    E, A, alpha = params(theta)
    names = [
        ("E", "≈0 (the irreducible loss is not identified)", "max y"),
        ("A", "≈0 (no reducible loss)", f"max y · {A_SPAN:g}"),
        ("alpha", "0", f"{ALPHA_MAX:g}"),
    ]
    hits = _on_bounds(theta, bounds, names)
    # refits start from the optimum and from the best other local optimum of the grid
    warm = [theta] + [t for t in ends if np.abs(t - theta).max() > 1e-3][:1]

    def refit(i):
        return params(_minimise(lu[i], ly[i], warm, bounds)[0])

    (E_ci, A_ci, alpha_ci), n_draws = _bootstrap(x, seeds, refit, 3, 4, n_boot, rng_seed)

    holdout, inner = None, x < x.max()
    if len(np.unique(x[inner])) >= 4:
        e_h, a_h, alpha_h = _minimise(lu[inner], ly[inner], grid, bounds)[0]
        predicted = math.exp(np.logaddexp(e_h, a_h - alpha_h * lu.max()))
        holdout = float(abs(predicted / y[~inner].mean() - 1))

    reason = _verdict(hits, n_draws, n_boot, "4 distinct x", [("alpha", alpha, alpha_ci)])
    status = "unidentified" if reason else "fit"
    return PowerLawFit(
        status, reason, E, A, alpha, E_ci, A_ci, alpha_ci, len(x), n_x, n_seeds, holdout
    )


def critical_batch(B, S, seeds=None, n_boot: int = 200, rng_seed: int = 0) -> dict:
    """Fit S = S_min (1 + B_crit / B), steps to a target loss against batch size, by
    least squares on log S, with B_crit in [min B / 1e3, max B · 1e3]. Returns a
    JSON-ready dict: status ("fit" | "unidentified"), reason, S_min, B_crit, their
    bootstrap 95 % intervals S_min_ci, B_crit_ci (over seeds when there are >= 5, else
    points), n_points, n_x. "unidentified" with < 3 batch sizes or points, a parameter
    on a bound, or an interval wider than its value."""
    B, S, seeds, n_x, reason = _clean(B, S, seeds, 3, 2, "batch sizes", "model")
    out = {"status": "unidentified", "reason": reason, "S_min": None, "B_crit": None}
    out.update(S_min_ci=None, B_crit_ci=None, n_points=len(B), n_x=n_x)
    if reason:
        return out
    lb, ls = np.log(B), np.log(S)
    b_lo, b_hi = float(lb.min()) - math.log(B_SPAN), float(lb.max()) + math.log(B_SPAN)
    # S_min <= every S, and >= the smallest S_min that B_crit's upper bound allows
    s_lo = float(ls.min() - np.logaddexp(0, b_hi - lb.min()))
    bounds = ([s_lo, b_lo], [float(ls.max()), b_hi])
    grid = [(float(ls.min()), float(b)) for b in (lb.min(), np.median(lb), lb.max())]

    def solve(idx, starts) -> np.ndarray:
        def residual(t):
            return t[0] + np.logaddexp(0.0, t[1] - lb[idx]) - ls[idx]

        runs = [least_squares(residual, s, bounds=bounds, xtol=1e-12, ftol=1e-12) for s in starts]
        return min(runs, key=lambda r: r.cost).x

    theta = solve(slice(None), grid)
    names = [
        ("S_min", "(set by B_crit's upper bound)", "max S"),
        ("B_crit", f"min B / {B_SPAN:g} (larger batches do not help)",
         f"max B · {B_SPAN:g} (perfect scaling: B_crit lies beyond the batch sizes)"),
    ]  # fmt: skip
    hits = _on_bounds(theta, list(zip(*bounds, strict=True)), names)

    def refit(i):
        return np.exp(solve(i, [theta, grid[1]]))

    (S_min_ci, B_crit_ci), n_draws = _bootstrap(B, seeds, refit, 2, 3, n_boot, rng_seed)
    S_min, B_crit = (float(v) for v in np.exp(theta))
    checks = [("B_crit", B_crit, B_crit_ci), ("S_min", S_min, S_min_ci)]
    reason = _verdict(hits, n_draws, n_boot, "3 batch sizes", checks)
    out.update(status="unidentified" if reason else "fit", reason=reason, S_min=S_min)
    out.update(B_crit=B_crit, S_min_ci=S_min_ci, B_crit_ci=B_crit_ci)
    return {k: _plain(v) for k, v in out.items()}
