"""Scaling-law fits and the gradient-noise-scale estimator on synthetic data with known
answers, and the report built from a synthetic sweep's Parquet files."""

import numpy as np
import pytest
import torch

from agd_ray.analysis.fits import critical_batch, fit_power_law, fit_with_bootstrap
from agd_ray.train.noise import NoiseScale


@pytest.mark.parametrize("alpha", [0.3, 0.76, 1.5])
def test_power_law_fit_recovers_the_exponent(alpha):
    rng = np.random.default_rng(0)
    x = np.geomspace(4, 4096, 10)
    E, A = 0.2, 3.0
    seeds = np.repeat([0, 1, 2], len(x))
    xs = np.tile(x, 3)
    y = (E + A * xs**-alpha) * (1 + 0.002 * rng.standard_normal(len(xs)))
    fit = fit_with_bootstrap(xs, y, seeds)
    assert abs(fit.alpha - alpha) < 0.02
    assert fit.E == pytest.approx(E, abs=0.02)
    assert fit.n_seeds == 3 and fit.alpha_ci is not None
    lo, hi = fit.alpha_ci
    assert lo <= fit.alpha <= hi and hi - lo < 0.1


def test_power_law_fit_needs_three_points():
    with pytest.raises(ValueError):
        fit_power_law([1, 2], [1.0, 0.5])


def test_critical_batch_fit():
    B = np.array([32, 64, 128, 256, 512, 1024, 2048])
    S = 1000 * (1 + 300 / B)
    fit = critical_batch(B, S)
    assert fit["S_min"] == pytest.approx(1000, rel=1e-3)
    assert fit["B_crit"] == pytest.approx(300, rel=1e-3)


def test_noise_scale_recovers_known_b_simple():
    """Per-sample gradients G + noise with covariance Sigma: B_simple = tr(Sigma)/|G|^2."""
    torch.manual_seed(0)
    d = 50
    G = torch.randn(d)
    G = G / G.norm() * 2.0  # |G|^2 = 4
    sigma = torch.linspace(0.5, 1.5, d)  # diagonal covariance, tr = 50
    expected = sigma.sum().item() / 4.0  # 12.5

    est = NoiseScale(beta=0.999)
    b_small, b_big = 16, 64
    for _ in range(3000):
        samples = G + torch.randn(b_big, d) * sigma.sqrt()
        big = samples.mean(0)
        smalls = samples.view(4, b_small, d).mean(1)  # four workers of B/4
        small_sq = (smalls**2).sum(1).mean()
        est.update(small_sq, (big**2).sum(), b_small, b_big)
    assert est.value() == pytest.approx(expected, rel=0.1)
