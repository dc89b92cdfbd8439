"""``agd-ray train`` with one worker runs under Ray Train's local mode, in the
driver's own process: a run killed mid-way (SIGKILL) resumes from its last
persisted checkpoint with ``--resume`` and ends exactly where an uninterrupted run
ends."""

import os
import signal
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from agd_ray.cli import main

pytestmark = pytest.mark.ray  # integration tier (no Ray is started, but it is slow)

SETTINGS = [
    "train.epochs=6",
    "train.checkpoint_min_s=0",
    "data.num_samples=2000",
    "model.width=64",
    "wandb.mode=disabled",
]


def _args(out, *extra):
    args = ["train", "experiments/quickstart.yaml", "--out", str(out), *extra]
    for item in SETTINGS:
        args += ["--set", item]
    return args


def test_killed_local_run_resumes_to_the_uninterrupted_result(tmp_path, capsys):
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agd_ray.cli", *_args(killed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for line in proc.stdout:  # the checkpoint of epoch 3 is written before its line
        if line.startswith("epoch   3/6"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "quickstart" / "trials.parquet").exists()

    assert main(_args(killed, "--resume")) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("epoch")]
    assert lines[0].startswith("epoch   4/6") and len(lines) == 3  # epochs 4-6 only

    assert main(_args(tmp_path / "whole")) == 0
    resumed = pq.read_table(killed / "quickstart" / "epochs.parquet").to_pylist()
    whole = pq.read_table(tmp_path / "whole" / "quickstart" / "epochs.parquet").to_pylist()
    assert [r["epoch"] for r in resumed] == list(range(6))
    for a, b in zip(resumed, whole, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["test_loss"] == b["test_loss"]
