"""ASHA per tuning group (``sweep.scheduler: asha``): decisions on a hand-made grid,
AGD and single-run optimizers never stopped, and the config's refusals."""

from types import SimpleNamespace

import pytest
from ray.tune.schedulers import TrialScheduler

from agd_ray.config import ConfigError, load_config, validate_config
from agd_ray.sweep.grid import expand
from agd_ray.sweep.scheduler import GroupedASHA, grace_epochs, make_scheduler

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def _sweep(*overrides):
    base = [
        "sweep.scheduler=asha",
        "train.epochs=9",
        "sweep.grid={model.depth: [2, 4]}",
        "sweep.baselines=[{name: adam, lr: [0.0001, 0.001, 0.01]}, {name: prodigy, lr: 1.0}]",
    ]
    cfg = load_config("experiments/quickstart.yaml", [*base, *overrides])
    return cfg, expand(cfg)


def _trial(spec):
    return SimpleNamespace(trial_id=spec.trial_id, config={"trial_id": spec.trial_id})


def _result(epoch, loss):
    return {"training_iteration": epoch, "val_loss": loss}


def test_each_grid_is_judged_by_its_own_runs():
    cfg, specs = _sweep()
    asha = make_scheduler(cfg, specs)
    assert isinstance(asha, GroupedASHA) and asha.grace == grace_epochs(cfg) == 2
    trials = {s.trial_id: _trial(s) for s in specs}
    for t in trials.values():
        asha.on_trial_add(None, t)
    by = {(s.group, s.optimizer, s.config.optimizer.lr): trials[s.trial_id] for s in specs}
    shallow, deep = sorted({s.group for s in specs})
    # depth 2's grid: the first at the rung (epoch 2) goes on, a worse one stops
    assert asha.on_trial_result(None, by[shallow, "adam", 0.001], _result(2, 0.50)) == CONTINUE
    assert asha.on_trial_result(None, by[shallow, "adam", 0.0001], _result(2, 0.90)) == STOP
    # depth 4's grid is judged alone: its losses, all worse than depth 2's, go on
    assert asha.on_trial_result(None, by[deep, "adam", 0.001], _result(2, 0.95)) == CONTINUE
    assert asha.on_trial_result(None, by[deep, "adam", 0.01], _result(2, 0.94)) == CONTINUE
    # before its grace epochs, no trial is judged
    assert asha.on_trial_result(None, by[shallow, "adam", 0.01], _result(1, 5.0)) == CONTINUE
    assert asha.stopped == 1


def test_agd_and_single_run_optimizers_are_never_stopped():
    cfg, specs = _sweep()
    asha = make_scheduler(cfg, specs)
    alone = [s for s in specs if s.optimizer in ("agd", "prodigy")]
    assert alone and all(s.trial_id not in asha.grid_of for s in alone)
    for s in alone:
        t = _trial(s)
        asha.on_trial_add(None, t)
        for epoch in range(1, 10):
            assert asha.on_trial_result(None, t, _result(epoch, 10.0 * epoch)) == CONTINUE


def test_fifo_is_the_default():
    cfg = load_config("experiments/quickstart.yaml")
    assert cfg.sweep.scheduler == "fifo" and make_scheduler(cfg, expand(cfg)) is None


@pytest.mark.parametrize(
    "raw,key",
    [
        ({"sweep": {"scheduler": "asha"}, "data": {"val_fraction": 0.0}}, "sweep.scheduler"),
        ({"sweep": {"scheduler": "asha", "grace_epochs": 30}}, "sweep.grace_epochs"),
        ({"sweep": {"scheduler": "hyperband"}}, "sweep.scheduler"),
        ({"sweep": {"reduction_factor": 1.0}}, "sweep.reduction_factor"),
    ],
)
def test_bad_asha_settings_are_refused_by_key(raw, key):
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    assert str(err.value).startswith(key)
