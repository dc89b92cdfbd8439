"""ASHA and SHA per tuning group (``sweep.scheduler: asha | sha``): decisions on a
hand-made grid, AGD and single-run optimizers never stopped, and the config's
refusals."""

from types import SimpleNamespace

import pytest
from ray.tune.schedulers import TrialScheduler

from agd_ray.config import ConfigError, load_config, validate_config
from agd_ray.sweep.grid import expand
from agd_ray.sweep.scheduler import (
    GroupedASHA,
    GroupedSHA,
    grace_epochs,
    make_scheduler,
)
from agd_ray.sweep.store import OutcomeStore
from agd_ray.trial import TrialOutcome

CONTINUE, PAUSE, STOP = TrialScheduler.CONTINUE, TrialScheduler.PAUSE, TrialScheduler.STOP


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


def test_each_grid_is_judged_by_its_own_runs(tmp_path):
    cfg, specs = _sweep()
    asha = make_scheduler(cfg, specs, str(tmp_path))
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


def test_agd_and_single_run_optimizers_are_never_stopped(tmp_path):
    cfg, specs = _sweep()
    asha = make_scheduler(cfg, specs, str(tmp_path))
    alone = [s for s in specs if s.optimizer in ("agd", "prodigy")]
    assert alone and all(s.trial_id not in asha.grid_of for s in alone)
    for s in alone:
        t = _trial(s)
        asha.on_trial_add(None, t)
        for epoch in range(1, 10):
            assert asha.on_trial_result(None, t, _result(epoch, 10.0 * epoch)) == CONTINUE


def test_fifo_is_the_default():
    cfg = load_config("experiments/quickstart.yaml")
    assert cfg.sweep.scheduler == "fifo" and make_scheduler(cfg, expand(cfg), "") is None


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


class _Trial:  # hashable, as Tune's Trial
    def __init__(self, spec):
        self.trial_id, self.config = spec.trial_id, {"trial_id": spec.trial_id}
        self.status, self.is_saving = "PENDING", False


class _Controller:
    """What GroupedSHA asks of Tune's controller: its trials, and stopping one."""

    def __init__(self, trials):
        self.trials, self.stopped = trials, []

    def get_trials(self):
        return self.trials

    def stop_trial(self, trial):
        self.stopped.append(trial)
        trial.status = "TERMINATED"


def _sha(outcomes, *overrides):
    cfg, specs = _sweep("sweep.scheduler=sha", *overrides)
    sha = make_scheduler(cfg, specs, str(outcomes))
    trials = {s.trial_id: _Trial(s) for s in specs}
    for t in trials.values():
        sha.on_trial_add(None, t)
    by = {(s.group, s.optimizer, s.config.optimizer.lr): trials[s.trial_id] for s in specs}
    return cfg, specs, sha, by, _Controller(list(trials.values()))


def _epoch(epoch, loss):  # the loop's row: epoch counted from 0
    return {"epoch": epoch - 1, "val_loss": loss}


def test_sha_waits_for_the_whole_grid_then_keeps_the_best_third(tmp_path):
    cfg, specs, sha, by, tc = _sha(tmp_path)
    assert isinstance(sha, GroupedSHA) and sha.rungs == [2, 6]  # grace 2, x3, < 9 epochs
    shallow = sorted({s.group for s in specs})[0]
    a, b, c = (by[shallow, "adam", lr] for lr in (0.0001, 0.001, 0.01))
    for t in (a, b, c):
        t.status = "RUNNING"
    assert sha.on_trial_result(tc, a, _epoch(1, 0.1)) == CONTINUE  # before the rung
    # the first two at the rung wait, whatever their loss (ASHA would let the first go on)
    assert sha.on_trial_result(tc, a, _epoch(2, 0.90)) == PAUSE
    a.status = "PAUSED"
    assert sha.on_trial_result(tc, b, _epoch(2, 0.40)) == PAUSE
    b.status = "PAUSED"
    assert sha.choose_trial_to_run(tc) is not a and sha.choose_trial_to_run(tc) is not b
    # the last decides for all: ceil(3 / 3) = 1 goes on, the paused worse one stops
    store = OutcomeStore(str(tmp_path))
    store.put(TrialOutcome(a.trial_id, "unfinished", [{"epoch": 0}, {"epoch": 1}]))
    assert sha.on_trial_result(tc, c, _epoch(2, 0.50)) == STOP
    assert tc.stopped == [a] and sha.stopped == 2
    # both decisions marked, for the trials' own threads; the paused one's outcome stopped
    assert store.stop_marked(a.trial_id) and store.stop_marked(c.trial_id)
    assert store.get(a.trial_id).status == "stopped" and len(store.get(a.trial_id).history) == 2
    assert not store.stop_marked(b.trial_id)
    assert sha.choose_trial_to_run(tc) is b  # resumed from its checkpoint at the rung
    b.status = "RUNNING"
    # alone in its grid from now on: never paused again
    assert sha.on_trial_result(tc, b, _epoch(6, 0.30)) == CONTINUE


def test_sha_decides_when_a_grid_mate_ends_before_the_rung(tmp_path):
    _, specs, sha, by, tc = _sha(tmp_path)
    deep = sorted({s.group for s in specs})[1]
    a, b, c = (by[deep, "adam", lr] for lr in (0.0001, 0.001, 0.01))
    assert sha.on_trial_result(tc, a, _epoch(2, 0.5)) == PAUSE
    a.status = "PAUSED"
    assert sha.on_trial_result(tc, b, _epoch(2, 0.6)) == PAUSE
    b.status = "PAUSED"
    sha.on_trial_complete(tc, c, {})  # diverged at epoch 1: the rung is complete
    assert tc.stopped == [b] and sha.choose_trial_to_run(tc) is a
    # NaN or missing losses rank last
    _, specs, sha, by, tc = _sha(tmp_path)
    a, b, c = (by[deep, "adam", lr] for lr in (0.0001, 0.001, 0.01))
    assert sha.on_trial_result(tc, a, _epoch(2, float("nan"))) == PAUSE
    a.status = "PAUSED"
    assert sha.on_trial_result(tc, b, _epoch(2, None)) == PAUSE
    b.status = "PAUSED"
    assert sha.on_trial_result(tc, c, _epoch(2, 3.0)) == CONTINUE
    assert set(tc.stopped) == {a, b}


def test_sha_leaves_agd_and_single_runs_alone_and_refuses_multi_worker_trials(tmp_path):
    _, specs, sha, _, tc = _sha(tmp_path)
    for s in specs:
        if s.optimizer in ("agd", "prodigy"):
            t = _Trial(s)
            for epoch in range(1, 10):
                assert sha.on_trial_result(tc, t, _epoch(epoch, 1.0)) == CONTINUE
    with pytest.raises(ConfigError) as err:
        validate_config({"sweep": {"scheduler": "sha"}, "scaling": {"num_workers": 2}})
    assert str(err.value).startswith("sweep.scheduler") and "asha" in str(err.value)


def test_sha_after_resume_a_finished_trial_leaves_its_grid(tmp_path):
    _, specs, sha, by, tc = _sha(tmp_path)
    shallow = sorted({s.group for s in specs})[0]
    a, b, c = (by[shallow, "adam", lr] for lr in (0.0001, 0.001, 0.01))
    c.status = "TERMINATED"  # finished before the interruption: Tune adds it as it is
    sha.on_trial_add(tc, c)
    assert sha.on_trial_result(tc, a, _epoch(2, 0.5)) == PAUSE
    a.status = "PAUSED"
    assert sha.on_trial_result(tc, b, _epoch(2, 0.4)) == CONTINUE  # the rung is complete
    assert tc.stopped == [a]
