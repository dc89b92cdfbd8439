"""A clean console: ``agd-ray sweep`` and ``agd-ray train`` print the project's lines
only (no Ray banners, no worker logs, no tracebacks at the end of a successful run),
with live progress while trials run; ``--verbose`` brings Ray's output back."""

import os
import subprocess
import sys

import pytest
from test_cli import agd_ray
from wandb_records import read_run

from agd_ray.config import load_config
from agd_ray.data import DataSpec
from agd_ray.sweep.console import SweepProgress, format_trial
from agd_ray.sweep.cost import epoch_work
from agd_ray.sweep.grid import expand
from agd_ray.trial import TrialOutcome

NOISE = (
    "Traceback",
    "SystemExit",
    "ConnectionResetError",
    "View detailed results",
    "tensorboard",
    "Token authentication",
    "Configuration for experiment",
    "core_worker.cc",
    "pid=",  # a worker's log line streamed to the driver
)
SMALL = ["--set", "data.num_samples=2000", "--set", "train.epochs=2", "--set", "model.width=32"]


def console_env(tmp_path, **extra):
    """The user's environment: Ray's authentication mode unset (as for a user; the
    token Ray then creates goes to a HOME of the test's own), W&B offline."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**env, "HOME": str(home), "WANDB_MODE": "offline", **extra}


def assert_clean(run):
    text = run.stdout + run.stderr
    assert run.returncode == 0, text[-3000:]
    noise = [n for n in NOISE if n in text]
    assert not noise, f"{noise} in:\n{text[-4000:]}"


@pytest.mark.ray
def test_sweep_prints_the_project_lines_only(tmp_path):
    run = agd_ray(
        "sweep",
        "experiments/quickstart.yaml",
        "--out",
        tmp_path / "out",
        *SMALL,
        "--set",
        "name=console",
        "--set",
        "sweep.grid={model.depth: [2]}",
        "--set",
        "sweep.baselines=[{name: adam, lr: 1.0e-3}]",
        "--set",
        "sweep.report=false",
        env=console_env(tmp_path, AGD_RAY_PROGRESS_S="1"),
        timeout=240,
    )
    assert_clean(run)
    lines = run.stdout.splitlines()
    assert lines[0].startswith("sweep console: 2 of 2 trials to run")
    progress = [line for line in lines if line.startswith("  ... ")]
    assert progress and "/2 done" in progress[0] and "console-000-agd" in " ".join(progress)
    finished = [line for line in lines if line.startswith("[")]
    assert len(finished) == 2 and finished[-1].startswith("[2/2] ")
    assert all("completed  test_acc" in line for line in finished)
    assert "best of grid chosen by val_loss" in run.stdout  # the summary
    assert lines[-1].startswith("2 completed, 0 diverged, 0 failed")
    assert run.stderr.strip() == ""


@pytest.mark.ray  # integration tier: starts W&B's service process
def test_wandb_service_is_stopped_when_a_run_finishes(tmp_path):
    """A Ray worker kills its children before Python's atexit hooks run, W&B's
    service among them (its hook then prints a "Connection lost" traceback): the
    logger stops the service itself when its run finishes."""
    code = f"""
import os, subprocess
from agd_ray.config import load_config
from agd_ray.train.wandb_logger import WandbLogger
cfg = load_config(None, ["wandb.mode=offline"])
def children():
    out = subprocess.run(["ps", "-o", "comm=", "--ppid", str(os.getpid())],
                         capture_output=True, text=True).stdout.split()
    return [c for c in out if "wandb" in c]
logger = WandbLogger(cfg, "t0", rank=0, directory={str(tmp_path)!r})
assert logger.active and children(), children()
logger.log_epoch(1, {{"test_acc": 0.5}})
logger.finish("completed", {{"test_acc": 0.5}})
print("left:", children())
"""
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "left: []" in run.stdout, run.stdout
    assert "Traceback" not in run.stderr


@pytest.mark.ray  # integration tier: starts Ray and W&B's service
def test_trials_on_the_drivers_node_log_through_its_wandb_service(tmp_path):
    """A sweep's driver starts one W&B service; trials on its node connect to it
    instead of starting their own (0.25 s each), and their runs are whole. A trial
    told of a service on another node starts its own, as before."""
    code = f"""
import os, subprocess, ray
from agd_ray.config import load_config
from agd_ray.train.wandb_logger import (
    SharedService, WandbLogger, driver_service, join_service, shutdown_service)
ray.init(num_cpus=1, include_dashboard=False)
cfg = load_config(None, ["wandb.mode=offline"])
shared = driver_service(cfg)
assert shared is not None and shared.node_id == ray.get_runtime_context().get_node_id()
elsewhere = SharedService(shared.token, "another-node")
@ray.remote(max_calls=1)  # a fresh process each, as a new trial actor
def trial(i, service):
    join_service(service)
    logger = WandbLogger(cfg, f"t{{i}}", rank=0, directory={str(tmp_path)!r})
    out = subprocess.run(["ps", "-o", "comm=", "--ppid", str(os.getpid())],
                         capture_output=True, text=True).stdout
    logger.log_epoch(1, {{"test_acc": 0.5}})
    logger.finish("completed", {{"test_acc": 0.5}})
    return "wandb" in out
print("own service:", ray.get([trial.remote(0, shared), trial.remote(1, shared)]),
      ray.get(trial.remote(2, elsewhere)))
@ray.remote(max_calls=1)
def crash(service):  # a trial that raises with its run open; Tune then retries it
    join_service(service)
    try:
        WandbLogger(cfg, "t3", rank=0, directory={str(tmp_path)!r})
        raise RuntimeError("lost checkpoint")
    except RuntimeError:
        pass
    finally:
        shutdown_service(failed=True)
ray.get(crash.remote(shared))
print("retried:", ray.get(trial.remote(3, shared)))
@ray.remote(max_calls=1)
def killed(service):  # a trial whose process dies with its run open (no finally)
    join_service(service)
    WandbLogger(cfg, "t4", rank=0, directory={str(tmp_path)!r})
    os._exit(1)
try:
    ray.get(killed.remote(shared))
except Exception:
    pass
print("after a kill, own service:", ray.get(trial.remote(4, shared)))
"""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "own service: [False, False] True" in run.stdout, run.stdout
    assert "retried: False" in run.stdout, run.stdout  # the crashed run freed its id
    # a killed process's run stays open in the driver's service: its retry logs
    # through a service of its own
    assert "after a kill, own service: True" in run.stdout, run.stdout
    runs = [read_run(p) for p in sorted(tmp_path.glob("wandb/offline-run-*/*.wandb"))]
    runs = [r for r in runs if "name" in r]  # the killed attempt's file may hold no record
    assert sorted(r["name"] for r in runs)[:5] == ["t0", "t1", "t2", "t3", "t3"]
    finished = [r for r in runs if r["summary"].get("status") == "completed"]
    assert sorted(r["name"] for r in finished) == ["t0", "t1", "t2", "t3", "t4"]
    assert all(any("epoch/test_acc" in h for h in r["history"]) for r in finished)


# --- the progress line (no Ray) ---------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def specs(n_adam=1):
    cfg = load_config(
        None,
        [
            "name=p",
            "train.epochs=10",
            "sweep.grid={model.depth: [2]}",
            f"sweep.baselines=[{{name: adam, lr: {[1e-3 * (i + 1) for i in range(n_adam)]}}}]",
        ],
    )
    return expand(cfg)


def test_progress_lines_name_running_trials_with_an_eta():
    printed, clock = [], Clock()
    s = specs()
    p = SweepProgress(s, s, printed.append, live=False, every_s=5, clock=clock)
    p.start()
    p.started("p-000-agd")
    p.started("p-001-adam")
    p.tick()
    assert printed == []  # not before every_s
    clock.now += 5
    p.tick()
    assert (
        printed[-1]
        == "  ... 0/2 done, 2 running, 5s elapsed | p-000-agd starting | p-001-adam starting"
    )
    p.result("p-000-agd", {"epoch": 4, "val_loss": 0.51234, "test_acc": 0.5})
    clock.now += 5
    p.tick()
    # 5 of 20 epochs in 10 s: 30 s to go
    assert printed[-1] == (
        "  ... 0/2 done, 2 running, 10s elapsed, eta 30s | "
        "p-000-agd epoch 5/10 val_loss 0.5123 test_acc 0.500 | p-001-adam starting"
    )
    p.finished("p-000-agd", "[1/2] p-000-agd ...")
    assert printed[-1] == "[1/2] p-000-agd ..."
    clock.now += 5
    p.tick()  # 10 of 20 epochs in 15 s
    assert printed[-1].startswith("  ... 1/2 done, 1 running, 15s elapsed, eta 15s | p-001-adam")
    p.finished("p-001-adam", "[2/2] p-001-adam ...")
    clock.now += 60
    p.tick()
    assert printed[-1] == "[2/2] p-001-adam ..."  # nothing running: no progress line


def test_eta_weighs_each_epoch_by_what_its_kind_of_trial_costs():
    """A narrow trial (1 s an epoch) then a wide one (10 s): once the wide one has
    reported an epoch, the ETA counts its nine epochs left at 10 s each, not 1 s."""
    printed, clock = [], Clock()
    cfg = load_config(None, ["name=p", "train.epochs=10", "sweep.grid={model.width: [64, 1024]}"])
    narrow, wide = expand(cfg)
    p = SweepProgress([narrow, wide], [narrow, wide], printed.append, every_s=1, clock=clock)
    p.start()
    p.started(narrow.trial_id)
    clock.now += 5
    p.result(narrow.trial_id, {"epoch": 4, "wall_s": 5.0})
    p.tick()  # 5 of 20 equal epochs done in 5 s: 15 s to go
    assert ", eta 15s |" in printed[-1]
    clock.now += 5
    history = [{"epoch": e, "wall_s": e + 1.0, "test_acc": 0.5} for e in range(10)]
    outcome = TrialOutcome(narrow.trial_id, "completed", history, params=1)
    p.finished(narrow.trial_id, "[1/2] narrow", outcome)
    p.started(wide.trial_id)
    clock.now += 10
    p.result(wide.trial_id, {"epoch": 0, "wall_s": 10.0})
    p.tick()  # 10 x 1 s + 1 x 10 s done in 20 s; 9 x 10 s left: 90 s
    assert ", 20s elapsed, eta 1m30s |" in printed[-1]


def test_eta_shares_the_work_left_over_the_trials_at_once_with_their_fixed_cost():
    """Six alike trials, two at once, each 1 s of set-up then 10 epochs of 1 s, after
    5 s of Tune's own start: when the third and fourth are half done, 16 s are left
    (5 s for them, then 11 s for the last two)."""
    printed, clock = [], Clock()
    s = specs(n_adam=5)
    p = SweepProgress(s, s, printed.append, every_s=1, clock=clock)
    p.start()
    clock.now += 5
    first, second, third, fourth = (spec.trial_id for spec in s[:4])
    p.started(first)
    p.started(second)
    clock.now += 11
    for trial_id in (first, second):
        history = [{"epoch": e, "wall_s": e + 1.0, "test_acc": 0.5} for e in range(10)]
        outcome = TrialOutcome(trial_id, "completed", history, params=1)
        p.finished(trial_id, f"{trial_id} done", outcome)
    p.started(third)
    p.started(fourth)
    clock.now += 6
    p.result(third, {"epoch": 4, "wall_s": 5.0})
    p.result(fourth, {"epoch": 4, "wall_s": 5.0})
    p.tick()
    assert ", 22s elapsed, eta 16s |" in printed[-1]


def test_time_since_a_trials_last_report_counts_as_its_epochs():
    """In-process trials report at checkpoints only: 5 s after its first epoch's
    report (1 s an epoch), a 10-epoch trial has about 4 s left, not 9."""
    printed, clock = [], Clock()
    (only, *_) = specs()
    p = SweepProgress([only], [only], printed.append, every_s=1, clock=clock)
    p.start()
    p.started(only.trial_id)
    clock.now += 1
    p.result(only.trial_id, {"epoch": 0, "wall_s": 1.0})
    clock.now += 5
    p.tick()
    assert ", 6s elapsed, eta 4s |" in printed[-1]


def test_an_unmeasured_kind_is_costed_from_how_optimizers_compare_elsewhere():
    cfg = load_config(
        None,
        [
            "name=p",
            "sweep.grid={model.width: [64, 1024]}",
            "sweep.baselines=[{name: adam, lr: [0.001]}]",
        ],
    )
    agd64, adam64, agd1024, adam1024 = expand(cfg)
    p = SweepProgress([], [agd64, adam64, agd1024, adam1024], lambda line: None, every_s=1)
    assert p.epoch_s(adam1024.trial_id) == 1.0  # nothing measured yet
    p.result(agd64.trial_id, {"epoch": 0, "wall_s": 1.0})
    p.result(adam64.trial_id, {"epoch": 1, "wall_s": 4.0})  # adam: 2x agd at width 64
    p.result(agd1024.trial_id, {"epoch": 0, "wall_s": 10.0})
    assert p.epoch_s(adam1024.trial_id) == pytest.approx(20.0)


def test_an_unseen_architecture_is_costed_by_its_size():
    """The quickstart's order: the four depth-2 kinds run first. A depth-8 width-256
    epoch is priced by its steps and compute from what they cost (here exactly a
    per-step plus a per-FLOP cost), not at their mean."""
    cfg = load_config("experiments/quickstart.yaml", [])
    specs = expand(cfg)
    work = epoch_work(specs, {s.trial_id: DataSpec("mnist1d", (40,), 10) for s in specs})
    p = SweepProgress([], specs, lambda line: None, every_s=1, work=work)

    def cost(s):
        steps, flops = work[s.trial_id]
        return 2e-3 * steps + 4e-10 * flops

    agd = [s for s in specs if s.optimizer == "agd"]
    for s in agd[:4]:  # depth 2: widths 64, 256 x batch 64, 256
        p.result(s.trial_id, {"epoch": 0, "wall_s": cost(s)})
    deep = next(s for s in agd if "depth=8;model.width=256;train.batch_size=64" in s.group)
    assert p.epoch_s(deep.trial_id) == pytest.approx(cost(deep), rel=1e-6)
    assert cost(deep) > 3 * max(cost(s) for s in agd[:4])  # the mean would be far off
    adam = next(s for s in specs if s.optimizer == "adam" and s.group == deep.group)
    assert p.epoch_s(adam.trial_id) == pytest.approx(cost(deep), rel=1e-6)  # AGD's: all known
    one = SweepProgress([], specs, lambda line: None, every_s=1, work=work)
    one.result(agd[0].trial_id, {"epoch": 0, "wall_s": 1.0})  # one size: scaled by compute
    ratio = work[deep.trial_id][1] / work[agd[0].trial_id][1]
    assert one.epoch_s(deep.trial_id) == pytest.approx(ratio)


def test_progress_counts_trials_done_before_a_resume_and_caps_the_names():
    printed, clock = [], Clock()
    s = specs(n_adam=6)
    p = SweepProgress(s, s[1:], printed.append, live=False, every_s=1, clock=clock)
    p.start()
    for spec in s[1:]:
        p.started(spec.trial_id)
    clock.now += 90
    p.tick()
    assert printed[-1].startswith("  ... 1/7 done, 6 running, 1m30s elapsed | ")
    assert printed[-1].endswith(" | +2 more")
    # the trial done before the resume, re-reported from Tune's older experiment
    # state: said to be from before, and not counted again
    p.finished(s[0].trial_id, f"[1/7] {s[0].trial_id} ...")
    assert printed[-1] == f"[1/7] {s[0].trial_id} ...  (finished before this --resume)"
    p.finished(s[1].trial_id, f"[2/7] {s[1].trial_id} ...")
    assert printed[-1] == f"[2/7] {s[1].trial_id} ..."
    clock.now += 1
    p.tick()
    assert printed[-1].startswith("  ... 2/7 done, 5 running")


def test_trials_paused_at_a_rung_are_counted_apart():
    printed, clock = [], Clock()
    s = specs(n_adam=3)
    p = SweepProgress(s, s, printed.append, live=False, every_s=1, clock=clock)
    p.start()
    for trial_id in ("p-001-adam", "p-002-adam", "p-003-adam"):
        p.started(trial_id)
        p.result(trial_id, {"epoch": 1, "val_loss": 0.5})
    p.waiting({"p-001-adam", "p-002-adam"})  # SHA: waiting for the grid's third
    clock.now += 2
    p.tick()
    assert printed[-1].startswith("  ... 0/4 done, 1 running, 2 paused at a rung, 2s elapsed")
    assert "p-003-adam epoch 2/10" in printed[-1] and "p-001-adam" not in printed[-1]
    p.waiting(set())  # the grid decided: one resumed, the others stopped
    p.finished("p-002-adam", "[1/4] p-002-adam ... stopped")
    clock.now += 2
    p.tick()
    assert printed[-1].startswith("  ... 1/4 done, 2 running, 4s elapsed")


def test_live_progress_is_one_line_rewritten_in_place(capsys):
    clock = Clock()
    s = specs()
    p = SweepProgress(s, s, print, live=True, clock=clock)
    p.start()
    p.started("p-000-agd")
    clock.now += 1
    p.tick()
    p.finished("p-000-agd", "[1/2] done")
    p.stop()
    out = capsys.readouterr().out
    assert out.startswith("\r\033[K  ... 0/2 done, 1 running")
    assert "\n" not in out.split("[1/2] done")[0]  # the status line is cleared, not ended
    assert out.endswith("\r\033[K[1/2] done\n")


def test_a_failed_trial_line_says_why():
    spec = specs()[0]
    line = format_trial(
        spec, TrialOutcome(spec.trial_id, "failed", error="RuntimeError: boom\nmore")
    )
    assert line.endswith("  failed  RuntimeError: boom")


def test_trial_lines_write_values_as_the_config_does():
    cfg = load_config(
        None,
        [
            "name=p",
            "sweep.grid={model.bias: [false, true]}",
            "sweep.baselines=[{name: adamw, lr: [0.001], betas: [0.9, 0.95]}]",
        ],
    )
    lines = [format_trial(s, None) for s in expand(cfg)]
    assert "bias=false" in lines[0] and "bias=true" in lines[-1]
    assert any("betas=[0.9, 0.95]" in line for line in lines), lines
