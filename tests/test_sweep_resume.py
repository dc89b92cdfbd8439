"""Kill a sweep's driver part-way (SIGKILL to its whole process group, Ray included),
then ``--resume``: every trial appears once, finished trials are not re-run, and
interrupted trials continue from their last checkpoint. Interrupt a successive-halving
sweep (Ctrl-C) just after its first decision: only what the scheduler stopped is
stored stopped, the rest stays unfinished, and ``--resume`` finishes the grids."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # see pyproject.toml

ARGS = [
    "--set",
    "data.num_samples=2000",
    "--set",
    "train.epochs=12",
    "--set",
    "train.batch_size=32",
    "--set",
    "name=killed",
    "--set",
    "sweep.grid={model.depth: [2, 3], model.width: [32, 64]}",
    "--set",
    "sweep.max_concurrent_trials=2",
    "--set",
    "sweep.baselines=[]",
    "--set",
    "train.checkpoint_min_s=0",  # a checkpoint every epoch
]
ROOT = Path(__file__).resolve().parents[1]


def _sweep(out, *extra, args=ARGS, **kw):
    cmd = [
        sys.executable,
        "-m",
        "agd_ray.cli",
        "sweep",
        "experiments/quickstart.yaml",
        "--out",
        str(out),
        *args,
        *extra,
    ]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kw,
    )


def _lose_the_named_checkpoint(experiment: Path) -> Path:
    """Delete the checkpoint that Tune's saved state names as an unfinished trial's
    newest, keeping a newer one on disk (made from it if the kill left none), as
    Tune's num_to_keep deletion does before its state catches up."""
    import shutil

    from ray.tune import ExperimentAnalysis

    for trial in ExperimentAnalysis(str(experiment)).trials:
        if trial.status != "TERMINATED" and trial.checkpoint is not None:
            named = Path(trial.checkpoint.path)
            index = int(named.name.removeprefix("checkpoint_"))
            newer = named.with_name(f"checkpoint_{index + 1:06d}")
            if not newer.exists():
                shutil.copytree(named, newer)
            shutil.rmtree(named)
            return named
    raise AssertionError("no unfinished trial with a checkpoint in Tune's state")


def test_resume_after_driver_is_killed(tmp_path):
    outcomes = tmp_path / "killed/ray/outcomes"
    driver = _sweep(tmp_path)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(outcomes.glob("*.json"))) < 1:
        assert driver.poll() is None, driver.stdout.read()
        time.sleep(0.5)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in outcomes.glob("*.json")}
    assert 1 <= len(done_before) < 4
    # every checkpoint of the trials that were cut short (Tune resumes a trial from
    # the newest one its saved experiment state knows, not always the newest on disk)
    cut_short = []
    for path in sorted((tmp_path / "killed/ray/tune").rglob("checkpoint_*/state.pt")):
        state = torch.load(path, weights_only=False)["state"]
        if state["status"] == "running":
            cut_short.append([h["samples_per_s"] for h in state["history"]])
    assert cut_short, "no interrupted trial had a checkpoint"
    # and, for one of them, what a kill between Tune's deletion of an old checkpoint
    # and its next state save leaves (seen once in CI): the state's newest is gone
    lost = _lose_the_named_checkpoint(tmp_path / "killed/ray/tune")

    resumed = _sweep(tmp_path, "--resume")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out[-3000:]
    assert "Traceback" not in out
    # put back from the newer one, and said so (Tune may delete it again later, as
    # newer checkpoints of the resumed trial arrive)
    assert "--resume: put back" in out and f"{lost.parent.name}/{lost.name}" in out, out
    trials = pq.read_table(tmp_path / "killed/trials.parquet").to_pylist()
    epochs = pq.read_table(tmp_path / "killed/epochs.parquet").to_pylist()
    assert len(trials) == 4 and len({t["trial_id"] for t in trials}) == 4
    assert all(t["status"] == "completed" for t in trials)
    for t in trials:
        assert sorted(e["epoch"] for e in epochs if e["trial_id"] == t["trial_id"]) == list(
            range(12)
        )
    # an interrupted trial resumed from a checkpoint: the epochs it held reappear as
    # they were (their timings included), not as a second run of them
    rates = {
        t["trial_id"]: [e["samples_per_s"] for e in epochs if e["trial_id"] == t["trial_id"]]
        for t in trials
    }
    assert any(r[: len(c)] == c for c in cut_short for r in rates.values())
    # trials that had finished were not run again
    for name, mtime in done_before.items():
        assert (outcomes / name).stat().st_mtime_ns == mtime

    # on a finished sweep, --resume only prints the summary
    again = _sweep(tmp_path, "--resume")
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0 and "nothing to run" in out


SHA = [
    *("--set", "data.num_samples=2000", "--set", "train.epochs=8", "--set", "name=halved"),
    *("--set", "sweep.grid={model.depth: [2, 3]}", "--set", "sweep.scheduler=sha"),
    *("--set", "sweep.baselines=[{name: adam, lr: [0.003, 0.0001, 0.00001]}]"),
    *("--set", "wandb.mode=disabled", "--set", "sweep.report=false"),
]


def test_sha_interrupted_then_resumed(tmp_path):
    outcomes = tmp_path / "halved/ray/outcomes"
    driver = _sweep(tmp_path, args=SHA)
    deadline = time.time() + 240
    while time.time() < deadline and not list(outcomes.glob("*.stop")):
        assert driver.poll() is None, driver.stdout.read()
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)  # Ctrl-C, to the driver alone
    out, _ = driver.communicate(timeout=120)
    assert driver.returncode == 1 and "Traceback" not in out, out[-3000:]
    assert "unfinished; the same command with --resume runs them" in out
    assert "Tuner.restore" not in out
    marked = {p.name.removesuffix(".stop") for p in outcomes.glob("*.stop")}
    stored = {p.stem: p.read_text() for p in outcomes.glob("*.json")}
    # stopped only where the scheduler decided so; AGD never
    for trial_id, text in stored.items():
        if '"status": "stopped"' in text:
            assert trial_id in marked and "adam" in trial_id

    resumed = _sweep(tmp_path, "--resume", args=SHA)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and "Traceback" not in out, out[-3000:]
    trials = pq.read_table(tmp_path / "halved/trials.parquet").to_pylist()
    epochs = pq.read_table(tmp_path / "halved/epochs.parquet").to_pylist()
    status = {t["trial_id"]: t["status"] for t in trials}
    assert len(status) == 8
    # per depth: AGD completed; of Adam's three, the best at epoch 2 completed
    assert sorted(status.values()) == ["completed"] * 4 + ["stopped"] * 4
    for t in trials:
        seen = sorted(e["epoch"] for e in epochs if e["trial_id"] == t["trial_id"])
        assert seen == list(range(8 if t["status"] == "completed" else 2)), t["trial_id"]
