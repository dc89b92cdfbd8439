"""Scaling-law fits: L = E + A x^-alpha (power law with an irreducible loss), the
critical-batch model S = S_min (1 + B_crit / B) (Shallue et al. 2018; McCandlish et
al. 2018), and bootstrap confidence intervals over seeds."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import curve_fit


def power_law(x, E, A, alpha):
    return E + A * np.power(x, -alpha)


@dataclass
class PowerLawFit:
    E: float
    A: float
    alpha: float
    n: int
    alpha_ci: tuple[float, float] | None = None  # 95 % bootstrap interval over seeds
    n_seeds: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def fit_power_law(x, y) -> PowerLawFit:
    """Least squares of L = E + A x^-alpha, with E >= 0, A >= 0, alpha in [0, 5].

    x is rescaled by its geometric mean for conditioning; A is mapped back."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or len(np.unique(x)) < 3:
        raise ValueError("a power-law fit needs at least 3 distinct x values")
    x0 = float(np.exp(np.mean(np.log(x))))
    u = x / x0
    guesses = [(min(y) * 0.5, max(y) - min(y) * 0.5, a) for a in (0.1, 0.5, 1.0, 2.0)]
    best = None
    for p0 in guesses:
        try:
            params, _ = curve_fit(
                power_law, u, y, p0=p0, bounds=([0, 0, 0], [np.inf, np.inf, 5]), maxfev=20000
            )
        except RuntimeError:
            continue
        err = float(np.sum((power_law(u, *params) - y) ** 2))
        if best is None or err < best[0]:
            best = (err, params)
    if best is None:
        raise ValueError("the power-law fit did not converge")
    E, A_u, alpha = best[1]
    return PowerLawFit(E=float(E), A=float(A_u * x0**alpha), alpha=float(alpha), n=len(x))


def fit_with_bootstrap(x, y, seeds, n_boot: int = 200, rng_seed: int = 0) -> PowerLawFit:
    """The fit on all points, and a 95 % interval for alpha from resampling seeds
    with replacement (each draw takes all points of the seeds drawn)."""
    x, y, seeds = np.asarray(x, float), np.asarray(y, float), np.asarray(seeds)
    fit = fit_power_law(x, y)
    unique = np.unique(seeds)
    fit.n_seeds = len(unique)
    if len(unique) < 2:
        return fit
    rng = np.random.default_rng(rng_seed)
    alphas = []
    for _ in range(n_boot):
        draw = rng.choice(unique, size=len(unique), replace=True)
        idx = np.concatenate([np.flatnonzero(seeds == s) for s in draw])
        try:
            alphas.append(fit_power_law(x[idx], y[idx]).alpha)
        except ValueError:
            continue
    if alphas:
        lo, hi = np.percentile(alphas, [2.5, 97.5])
        fit.alpha_ci = (float(lo), float(hi))
    return fit


def critical_batch(B, S) -> dict[str, float]:
    """Fit S = S_min (1 + B_crit / B): steps to a target loss against batch size."""
    B, S = np.asarray(B, float), np.asarray(S, float)
    if len(np.unique(B)) < 2:
        raise ValueError("a critical-batch fit needs at least 2 batch sizes")
    (s_min, b_crit), _ = curve_fit(
        lambda b, s_min, b_crit: s_min * (1 + b_crit / b),
        B,
        S,
        p0=(max(float(S.min()), 1.0), float(np.median(B))),
        bounds=([0, 0], [np.inf, np.inf]),
        maxfev=20000,
    )
    return {"S_min": float(s_min), "B_crit": float(b_crit)}
