"""Scaling-law fits on synthetic sweeps with known answers: they recover true laws with
intervals that cover the truth, and refuse (status "unidentified", with a reason) to
call a law what the data cannot identify."""

import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from agd_ray.analysis.fits import PowerLawFit, critical_batch, fit_power_law


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """As in the report: OpenBLAS's threads slow these tiny fits 10x on a busy machine."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


X = np.geomspace(16, 4096, 7)
KEYS = {"status", "reason", "E", "A", "alpha", "E_ci", "A_ci", "alpha_ci"}
KEYS |= {"n_points", "n_x", "n_seeds", "holdout_rel_error"}


def sweep(alpha, E=0.2, A=3.0, n_seeds=3, noise=0.01, rng_seed=0):
    """Every x of X once per seed, with multiplicative Gaussian noise."""
    rng = np.random.default_rng(rng_seed)
    x, seeds = np.tile(X, n_seeds), np.repeat(np.arange(n_seeds), len(X))
    y = (E + A * x**-alpha) * (1 + noise * rng.standard_normal(len(x)))
    return x, y, seeds


def inside(value, ci):
    return ci is not None and ci[0] <= value <= ci[1]


@pytest.mark.parametrize("alpha", [0.3, 0.76])
def test_known_law_is_recovered_with_intervals_that_cover_it(alpha):
    x, y, seeds = sweep(alpha)
    fit = fit_power_law(x, y, seeds)
    assert fit.status == "fit" and fit.identified and fit.reason is None
    assert (fit.n_points, fit.n_x, fit.n_seeds) == (21, 7, 3)
    assert inside(alpha, fit.alpha_ci) and inside(0.2, fit.E_ci) and inside(3.0, fit.A_ci)
    assert abs(fit.alpha - alpha) < 0.05 and fit.E == pytest.approx(0.2, rel=0.1)
    assert fit.alpha_ci[1] - fit.alpha_ci[0] < fit.alpha
    assert fit.holdout_rel_error < 0.05
    assert np.allclose(fit.predict(X), 0.2 + 3 * X**-alpha, rtol=0.02)


def test_points_without_seeds_are_bootstrapped_point_by_point():
    x, y, _ = sweep(0.5)
    fit = fit_power_law(x, y)
    assert fit.identified and fit.n_seeds == 1
    assert inside(0.5, fit.alpha_ci) and inside(0.2, fit.E_ci)


def test_law_that_bends_at_the_largest_x_fails_the_hold_out():
    x, y, seeds = sweep(0.5)
    clean = fit_power_law(x, y, seeds, n_boot=50)
    y = np.where(x == X[-1], y * 1.25, y)  # the loss rises again at the largest x
    bent = fit_power_law(x, y, seeds, n_boot=50)
    assert clean.holdout_rel_error < 0.05
    assert bent.holdout_rel_error > 0.1 and bent.holdout_rel_error > 5 * clean.holdout_rel_error


def test_three_x_values_are_not_a_law():
    x = np.repeat([16.0, 64.0, 256.0], 3)
    fit = fit_power_law(x, 0.2 + 3 * x**-0.5)
    assert fit.status == "unidentified" and not fit.identified
    assert "3 distinct x values" in fit.reason and "needs 4" in fit.reason
    assert fit.E is None and fit.A is None and fit.alpha is None and fit.alpha_ci is None
    assert fit.holdout_rel_error is None and fit.n_x == 3
    assert np.isnan(fit.predict([1.0, 2.0])).all() and fit.label().startswith("unidentified")


def test_points_with_non_finite_loss_are_dropped_and_counted():
    x = np.array([16.0, 64.0, 256.0, 1024.0])
    fit = fit_power_law(x, [1.0, 0.5, 0.3, np.nan])
    assert not fit.identified and "after dropping 1 non-finite points" in fit.reason
    assert fit.n_points == 3


def test_as_many_points_as_parameters_are_not_a_law():
    fit = fit_power_law([16, 64, 256], [1.0, 0.5, 0.3])
    assert not fit.identified and fit.alpha is None
    fit = fit_power_law([16, 64, 256, 1024], [1.0, 0.5, 0.3, 0.25], n_boot=50)
    assert not fit.identified  # 4 points: few resamples keep 4 distinct x


def test_exponential_decay_drives_the_fit_onto_a_bound():
    x = np.arange(1.0, 11.0)
    fit = fit_power_law(x, np.exp(-x), n_boot=20)
    assert fit.status == "unidentified" and fit.alpha is not None  # numbers are kept
    assert "ended on its lower bound" in fit.reason and fit.reason.startswith("E ")


def test_loss_rising_with_x_drives_alpha_to_zero():
    fit = fit_power_law(X, 1 + 0.1 * np.log(X), n_boot=20)
    assert fit.status == "unidentified"
    assert "alpha ended on its lower bound 0" in fit.reason


def test_to_dict_is_json_with_every_key():
    x, y, seeds = sweep(0.5)
    for fit in (fit_power_law(x, y, seeds, n_boot=20), fit_power_law(X[:3], y[:3])):
        d = json.loads(json.dumps(fit.to_dict()))
        assert set(d) == KEYS
        assert d["status"] == fit.status and d["n_points"] == fit.n_points
    assert isinstance(d["n_x"], int) and d["E"] is None
    nan = PowerLawFit("fit", None, 0.1, 1.0, float("nan"), None, None, None, 5, 5, 1, None)
    assert nan.to_dict()["alpha"] is None


def test_equation_and_label():
    fit = PowerLawFit(
        "fit", None, 0.3, 2.0, 0.5, (0.1, 0.4), (1.0, 3.0), (0.45, 0.55), 7, 7, 1, 0.031
    )
    assert fit.equation() == "L = 0.3 + 2·x^-0.5"
    assert fit.label() == "L = 0.3 + 2·x^-0.5, α 95% CI [0.45, 0.55], hold-out err 3.1%"
    fit.status, fit.reason = "unidentified", "alpha ended on its upper bound 5"
    assert fit.label().endswith("(unidentified: alpha ended on its upper bound 5)")


def test_same_inputs_give_the_same_result():
    x, y, seeds = sweep(0.5)
    a = fit_power_law(x, y, seeds, n_boot=30, rng_seed=1).to_dict()
    b = fit_power_law(x, y, seeds, n_boot=30, rng_seed=1).to_dict()
    assert a == b
    B = np.array([32, 64, 128, 256, 512, 1024, 2048.0])
    S = 1000 * (1 + 300 / B) * (1 + 0.02 * np.random.default_rng(0).standard_normal(7))
    assert critical_batch(B, S, n_boot=30) == critical_batch(B, S, n_boot=30)


def test_many_seeds_are_bootstrapped_seed_by_seed():
    x, y, seeds = sweep(0.5, n_seeds=5)
    fit = fit_power_law(x, y, seeds, n_boot=50)
    assert fit.n_seeds == 5 and fit.identified and inside(0.5, fit.alpha_ci)


B = np.array([32, 64, 128, 256, 512, 1024, 2048.0])


def test_critical_batch_exact():
    fit = critical_batch(B, 1000 * (1 + 300 / B))
    assert fit["status"] == "fit" and fit["reason"] is None
    assert fit["S_min"] == pytest.approx(1000, rel=0.01)
    assert fit["B_crit"] == pytest.approx(300, rel=0.01)
    assert (fit["n_points"], fit["n_x"]) == (7, 7)
    json.dumps(fit)


def test_critical_batch_with_noise_over_two_seeds_covers_the_truth():
    rng = np.random.default_rng(0)
    b, seeds = np.tile(B, 2), np.repeat([0, 1], len(B))
    S = 1000 * (1 + 300 / b) * (1 + 0.03 * rng.standard_normal(len(b)))
    fit = critical_batch(b, S, seeds)
    assert fit["status"] == "fit"
    assert inside(1000, fit["S_min_ci"]) and inside(300, fit["B_crit_ci"])


def test_critical_batch_needs_three_batch_sizes():
    fit = critical_batch([64, 128, 64, 128], [3000.0, 2000.0, 3100.0, 2100.0])
    assert fit["status"] == "unidentified" and "2 distinct batch sizes" in fit["reason"]
    assert fit["S_min"] is None and fit["B_crit"] is None


def test_critical_batch_beyond_the_range_is_on_a_bound():
    fit = critical_batch(B, 1e6 / B, n_boot=20)  # perfect scaling: B_crit >> max B
    assert fit["status"] == "unidentified" and "B_crit ended on its upper bound" in fit["reason"]
