"""The gradient-noise-scale estimator on synthetic data with a known answer, and the
report published to W&B (fits: tests/test_fits.py; the report: tests/test_report.py)."""

import pytest
import torch

from agd_ray.train.noise import NoiseScale


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


def test_report_publishes_the_same_headline_and_figures_to_wandb(tmp_path, monkeypatch):
    """Online mode: the W&B Report is built from the local report (headline, every
    figure as a media panel, the fitted laws); only the upload is faked."""
    import wandb_workspaces.reports.v2 as wr
    from test_report import WIDTHS, synthetic_sweep

    from agd_ray.analysis import report as report_module
    from agd_ray.analysis.wandb_report import media_key, report_blocks
    from agd_ray.config import WandbConfig

    synthetic_sweep(tmp_path / "syn", WIDTHS)
    published = {}

    def fake_publish(name, project, entity, report):
        blocks = report_blocks(report, project, entity)
        published.update(name=name, blocks=blocks, figures=report.figures)
        return "https://wandb.ai/fake/report"

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # auto mode resolves to online
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr("agd_ray.analysis.wandb_report.publish", fake_publish)
    lines = []
    report_module.make_report(tmp_path / "syn", echo=lines.append, wandb_cfg=WandbConfig())
    assert published["name"] == "syn"
    text = " ".join(b.text for b in published["blocks"] if isinstance(b, wr.MarkdownBlock))
    assert "adam (best of 3 runs, chosen on val_loss" in text and "| width | agd |" in text
    media = [
        key
        for b in published["blocks"]
        if isinstance(b, wr.PanelGrid)
        for p in b.panels
        if isinstance(p, wr.MediaBrowser)
        for key in p.media_keys
    ]
    assert media == [media_key(f) for f, _ in published["figures"]] and len(media) >= 5
    assert any("https://wandb.ai/fake/report" in line for line in lines)


def test_report_refuses_a_folder_without_results(tmp_path):
    from agd_ray.analysis.report import make_report
    from agd_ray.config import ConfigError

    with pytest.raises(ConfigError, match="no trials.parquet"):
        make_report(tmp_path)
