"""Divergence: an injected non-finite weight stops training with status ``diverged``
and the epoch and step where it happened (the training loop, in-process, no Ray)."""

import math

import pyarrow.parquet as pq
import pytest
import torch

from agd_ray.config import load_config
from agd_ray.results import write_results
from agd_ray.train import loop
from agd_ray.train.session import Session
from agd_ray.trial import TrialOutcome, single_trial

BASE = [
    "name=div",
    "data.num_samples=2000",  # 1600 training samples, 160 held out for validation:
    # 1440 train, 22 steps of 64 per epoch
    "train.batch_size=64",
    "train.epochs=4",
    "train.noise_scale=false",
    "wandb.mode=disabled",
]


class _Checkpoint:
    @staticmethod
    def from_directory(path):
        return path


def _session(reports):
    return Session(
        rank=0,
        world=1,
        device=torch.device("cpu"),
        prepare_model=lambda m: m,
        get_checkpoint=lambda: None,
        report=lambda metrics, checkpoint=None: reports.append(metrics),
        checkpoint_class=_Checkpoint,
    )


def _poison_weight_before_step(monkeypatch, step: int):
    """Fill the first weight with NaN just before the forward pass of ``step`` (1-based)."""
    build = loop.build_model

    def build_and_poison(cfg, spec):
        model = build(cfg, spec)
        calls = {"n": 0}

        def hook(module, args):
            if module.training:
                calls["n"] += 1
                if calls["n"] == step:
                    with torch.no_grad():
                        next(module.parameters()).fill_(float("nan"))

        model.register_forward_pre_hook(hook)
        return model

    monkeypatch.setattr(loop, "build_model", build_and_poison)


def _poison_weight_after_step(monkeypatch, step: int):
    """Make a weight infinite right after optimizer step ``step``: the losses stay finite."""
    build = loop.build_optimizer

    def build_and_poison(cfg, model):
        opt = build(cfg, model)
        calls = {"n": 0}

        def hook(optimizer, args, kwargs):
            calls["n"] += 1
            if calls["n"] == step:
                optimizer.param_groups[-1]["params"][0].data.fill_(float("inf"))

        opt.register_step_post_hook(hook)
        return opt

    monkeypatch.setattr(loop, "build_optimizer", build_and_poison)


def test_nan_weight_mid_epoch_stops_with_epoch_and_step(monkeypatch, tmp_path):
    _poison_weight_before_step(monkeypatch, step=30)  # epoch 1 (steps 23..44)
    cfg = load_config(None, BASE)
    reports = []
    result = loop.run_training(cfg, _session(reports), loop.TrialInfo("div"))

    assert result["status"] == "diverged"
    history = result["history"]
    assert [h["epoch"] for h in history] == [0, 1]  # stopped in the epoch it diverged
    assert history[0]["diverged_step"] is None
    assert history[1]["diverged_step"] == 30
    assert reports[-1]["status"] == "diverged"

    outcome = TrialOutcome("div", result["status"], history, result["params"])
    write_results([(single_trial(cfg), outcome)], tmp_path)
    (row,) = pq.read_table(tmp_path / "trials.parquet").to_pylist()
    assert (row["status"], row["diverged_epoch"], row["diverged_step"]) == ("diverged", 1, 30)


def test_non_finite_weight_with_finite_losses_is_caught_at_the_epochs_end(monkeypatch):
    _poison_weight_after_step(monkeypatch, step=22)  # the last step of epoch 0
    cfg = load_config(None, BASE)
    result = loop.run_training(cfg, _session([]), loop.TrialInfo("div"))
    assert result["status"] == "diverged"
    (row,) = result["history"]
    assert row["diverged_step"] == 22
    assert math.isfinite(row["train_loss"])  # every loss was finite


@pytest.mark.ray  # integration tier: a whole 2-epoch run
def test_a_healthy_run_completes_with_no_divergence():
    cfg = load_config(None, [*BASE, "train.epochs=2"])
    result = loop.run_training(cfg, _session([]), loop.TrialInfo("ok"))
    assert result["status"] == "completed"
    assert all(h["diverged_step"] is None for h in result["history"])


@pytest.mark.ray  # integration tier: two whole runs
def test_fixed_seed_run_matches_values_recorded_before_the_loop_was_split():
    """Changes that should not alter results (the loop's redesign into components)
    give the same numbers: a 2-epoch run of AGD and of Adam, noise scale on, against
    values recorded from the single-file loop (tests/data/fixed_seed_2_epochs.json)."""
    import json
    from pathlib import Path

    recorded = json.loads((Path(__file__).parent / "data/fixed_seed_2_epochs.json").read_text())
    for name, rows in recorded.items():
        cfg = load_config(
            None, [*BASE, "train.epochs=2", "train.noise_scale=true", f"optimizer.name={name}"]
        )
        history = loop.run_training(cfg, _session([]), loop.TrialInfo(name))["history"]
        for got, want in zip(history, rows, strict=True):
            for key, value in want.items():
                expected = None if value is None else pytest.approx(value, rel=1e-6, abs=1e-12)
                assert got[key] == expected, (name, key)
