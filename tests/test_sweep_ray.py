"""Ray integration: real sweeps on Ray Tune (concurrency, divergence, batch ramps,
multi-worker trials through TorchTrainer + TuneReportCallback)."""

import pyarrow.parquet as pq
import pytest

from agd_ray.config import load_config
from agd_ray.sweep.runner import run_sweep

pytestmark = pytest.mark.ray

BASE = ["data.num_samples=2000", "train.epochs=3", "train.batch_size=64"]
N_TRAIN = 1600 - 160  # 2000 samples: 1600 train, of which data.val_fraction (0.1) held out


def test_concurrent_sweep_with_divergence_and_batch_ramp(ray_session, tmp_path):
    cfg = load_config(
        None,
        BASE
        + [
            "name=mini",
            "train.batch_size=8",  # ~500 steps per trial, so two trials overlap
            "train.batch_schedule=[[2, 16]]",
            "sweep.grid.model.width=[128, 256]",
            "sweep.max_concurrent_trials=2",
            # SGD at lr 1e6 on the square loss overflows in its first epoch.
            "sweep.baselines=[{name: sgd, lr: 1.0e6}]",
        ],
    )
    result = run_sweep(cfg, tmp_path, echo=lambda line: None)
    trials = pq.read_table(tmp_path / "mini/trials.parquet").to_pylist()
    epochs = pq.read_table(tmp_path / "mini/epochs.parquet").to_pylist()

    assert len(trials) == 4
    status = {(t["optimizer.name"], t["model.width"]): t["status"] for t in trials}
    assert status == {
        ("agd", 128): "completed",
        ("agd", 256): "completed",
        ("sgd", 128): "diverged",
        ("sgd", 256): "diverged",
    }
    for t in trials:
        rows = [e for e in epochs if e["trial_id"] == t["trial_id"]]
        assert [e["epoch"] for e in rows] == list(range(len(rows)))  # each epoch once
        if t["optimizer.name"] == "agd":
            # the ramp: batch 8 for epochs 0-1, then 16
            assert [e["batch_size"] for e in rows] == [8, 8, 16]
            assert t["steps"] == 2 * (N_TRAIN // 8) + N_TRAIN // 16
            assert t["samples"] == N_TRAIN * 3
            assert t["wall_s"] > 0 and t["params"] > 0
            # AGD learns: its training loss falls every epoch, and test accuracy is
            # well above chance (10 classes)
            losses = [e["train_loss"] for e in rows]
            assert losses == sorted(losses, reverse=True), losses
            assert t["test_acc"] > 0.25, t["test_acc"]
        else:
            assert len(rows) < 3  # stopped at the epoch it diverged
            assert rows[-1]["train_loss"] != rows[-1]["train_loss"] or rows[-1][
                "train_loss"
            ] == float("inf")
    # two trials ran at the same time
    spans = sorted((o.started, o.finished) for o in result.outcomes.values())
    assert any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1))


def test_multi_worker_trials_run_through_torchtrainer(ray_session, tmp_path):
    cfg = load_config(None, BASE + ["name=dp", "scaling.num_workers=2"])
    result = run_sweep(cfg, tmp_path, echo=lambda line: None)
    (outcome,) = result.outcomes.values()
    assert outcome.status == "completed"
    assert [h["epoch"] for h in outcome.history] == [0, 1, 2]
    trials = pq.read_table(tmp_path / "dp/trials.parquet").to_pylist()
    assert trials[0]["status"] == "completed" and trials[0]["steps"] == 3 * (N_TRAIN // 64)
    # the Train run is stored under the sweep, named after the trial
    assert (tmp_path / "dp/ray/train" / outcome.trial_id).is_dir()
