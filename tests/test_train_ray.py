"""Ray integration: TorchTrainer with 2 CPU workers trains and resumes from its checkpoint."""

import pytest

from agd_ray.config import load_config
from agd_ray.train.trainer import make_trainer, outcome_from_result

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # see pyproject.toml

SMALL = ["data.num_samples=2000", "train.batch_size=64", "scaling.num_workers=2"]
N_TRAIN = 1440  # 2000 samples: 1600 train, of which data.val_fraction (0.1) is held out


def test_two_workers_train_then_resume(ray_session, tmp_path):
    cfg = load_config(None, SMALL + ["train.epochs=3"])
    result = make_trainer(cfg, "resume-test", str(tmp_path)).fit()
    first = outcome_from_result("t", result)
    assert first.status == "completed"
    losses = [h["train_loss"] for h in first.history]
    assert [h["epoch"] for h in first.history] == [0, 1, 2]
    assert losses[-1] < losses[0]
    assert first.history[-1]["eta_mean"] > 0
    assert first.history[-1]["step"] == 3 * (N_TRAIN // 64)

    # Same run name and storage: Train resumes from the last checkpoint (epoch 3 of 5),
    # so the first three epochs are carried over, not re-trained.
    cfg5 = load_config(None, SMALL + ["train.epochs=5"])
    second = outcome_from_result("t", make_trainer(cfg5, "resume-test", str(tmp_path)).fit())
    assert second.status == "completed"
    assert [h["epoch"] for h in second.history] == [0, 1, 2, 3, 4]
    assert second.history[:3] == first.history
    assert second.history[-1]["step"] == 5 * (N_TRAIN // 64)
    assert second.history[-1]["train_loss"] < first.history[-1]["train_loss"]
