"""Ray integration: a real small sweep produces the report and one offline W&B run per
trial (also with 2-worker trials), and a planted API key reaches no written file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from wandb_records import read_run

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]
SECRET = "planted-secret-key-0123456789abcdef0123"


def sweep(out, *sets, timeout=400):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_API_KEY": SECRET}
    env.pop("WANDB_DIR", None)
    args = [a for s in sets for a in ("--set", s)]
    cmd = [
        sys.executable,
        "-m",
        "agd_ray.cli",
        "sweep",
        "experiments/quickstart.yaml",
        "--out",
        str(out),
        *args,
    ]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return run


def offline_runs(sweep_dir):
    return sorted((sweep_dir / "wandb").glob("offline-run-*/*.wandb"))


def test_small_sweep_report_wandb_and_no_secret(tmp_path):
    sweep(
        tmp_path,
        "name=wb",
        "data.num_samples=1000",
        "train.epochs=2",
        "wandb.log_every=5",
        "sweep.grid={model.width: [16, 32, 64], train.batch_size: [16, 32, 64]}",
        "sweep.baselines=[]",
    )
    sweep_dir = tmp_path / "wb"
    report = sweep_dir / "report"
    figures = sorted(p.name for p in report.glob("*.png"))
    assert len(figures) >= 3, figures
    assert {"scaling_width.png", "batch_size.png", "eta.png"} <= set(figures)
    fits = json.loads((report / "fits.json").read_text())
    # one law per batch size (not pooled) and the frontier over them: 3 widths are
    # too few for a 3-parameter law, and the report says so
    widths = fits["test_loss_vs_width"]["agd"]
    assert [e["held_fixed"].get("train.batch_size") for e in widths[:3]] == [16, 32, 64]
    assert len(widths) == 4 and "frontier" in widths[3]["held_fixed"]
    for entry in widths:
        assert entry["status"] == "unidentified" and entry["n_x"] == 3
        assert entry["reason"].startswith("3 distinct x values") and entry["alpha"] is None
    assert len(fits["batch_size"]) == 3  # one study per width
    assert all(e["target_train_loss"] > 0 and "B_crit" in e for e in fits["batch_size"])
    page = (report / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(figures)

    runs = [read_run(p) for p in offline_runs(sweep_dir)]
    assert len(runs) == 9  # one per trial
    assert len({r["name"] for r in runs}) == 9
    for run in runs:
        assert run["group"] == "wb" and run["project"] == "agd-ray"
        assert run["config"]["model.width"] in (16, 32, 64)
        assert run["config"]["optimizer.name"] == "agd"
        keys = set().union(*run["history"])
        assert {"train/loss", "train/eta", "train/G", "epoch/test_acc", "epoch/eta_mean"} <= keys
        assert "epoch/noise_scale" in keys
        assert run["summary"]["status"] == "completed" and "test_acc" in run["summary"]

    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.slow  # see pyproject.toml
def test_two_worker_trials_log_one_run_each(tmp_path):
    sweep(
        tmp_path,
        "name=dp",
        "data.num_samples=1000",
        "train.epochs=2",
        "scaling.num_workers=2",
        "sweep.grid={model.width: [16]}",  # one trial: one run, though two ranks train
        "sweep.baselines=[]",
        "sweep.report=false",
    )
    runs = [read_run(p) for p in offline_runs(tmp_path / "dp")]
    assert [r["name"] for r in runs] == ["dp-000-agd"]
    for run in runs:
        epochs = [h for h in run["history"] if "epoch/test_acc" in h]
        assert len(epochs) == 2  # each epoch once: only rank 0 logs
        assert any("epoch/noise_scale" in h for h in epochs)  # from the DDP hook
