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


def _synthetic_sweep(out_dir):
    """A width x seed sweep whose test loss follows 0.3 + 2 w^-0.5 exactly."""
    from agd_ray.config import load_config
    from agd_ray.sweep.grid import expand
    from agd_ray.sweep.results import write_results
    from agd_ray.train.trainer import TrialOutcome

    cfg = load_config(
        None, ["name=syn", "sweep.grid.model.width=[16, 64, 256, 1024]", "sweep.seeds=[0, 1]"]
    )
    entries = []
    for spec in expand(cfg):
        w = spec.config["model"]["width"]
        loss = 0.3 + 2.0 * w**-0.5
        history = [
            {
                "epoch": e,
                "step": 10 * (e + 1),
                "samples": 100 * (e + 1),
                "batch_size": 10,
                "train_loss": loss + 0.1 / (e + 1),
                "train_acc": 0.5,
                "test_loss": loss,
                "test_acc": 1 - loss,
                "eta_mean": 0.1 + 0.01 * e,
                "wall_s": 1.0 + e,
            }
            for e in range(3)
        ]
        entries.append((spec, TrialOutcome(spec.trial_id, "completed", history, params=w * 50)))
    write_results(entries, out_dir)
    return cfg


def test_report_from_a_synthetic_sweep(tmp_path, monkeypatch):
    import json

    from agd_ray.analysis import report as report_module
    from agd_ray.config import WandbConfig

    _synthetic_sweep(tmp_path / "syn")
    published = {}

    def fake_publish(name, project, entity, fits, summary):
        published.update(name=name, project=project, fits=fits, summary=summary)
        return "https://wandb.ai/fake/report"

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # auto mode resolves to online
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr("agd_ray.analysis.wandb_report.publish", fake_publish)
    lines = []
    out = report_module.make_report(tmp_path / "syn", echo=lines.append, wandb_cfg=WandbConfig())
    fits = json.loads((out / "fits.json").read_text())
    agd = fits["test_loss_vs_width"]["agd"]
    assert agd["alpha"] == pytest.approx(0.5, abs=0.02) and agd["E"] == pytest.approx(0.3, abs=0.01)
    assert agd["n_seeds"] == 2
    assert {"scaling_width.png", "eta.png"} <= {p.name for p in out.glob("*.png")}
    assert published["name"] == "syn" and json.loads(json.dumps(published["fits"])) == fits
    assert any("https://wandb.ai/fake/report" in line for line in lines)


def test_report_refuses_a_folder_without_results(tmp_path):
    from agd_ray.analysis.report import make_report
    from agd_ray.config import ConfigError

    with pytest.raises(ConfigError, match="no trials.parquet"):
        make_report(tmp_path)
