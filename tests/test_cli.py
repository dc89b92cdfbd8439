"""The agd-ray command: result files with the documented columns; bad input refused."""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
TRIAL_COLUMNS = {
    "trial_id",
    "status",
    "group",
    "optimizer.name",
    "seed",
    "params",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "steps",
    "samples",
    "wall_s",
    "diverged_epoch",
    "diverged_step",
}
EPOCH_COLUMNS = [
    "trial_id",
    "epoch",
    "step",
    "samples",
    "batch_size",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "test_acc5",
    "eta_mean",
    "eta_min",
    "eta_max",
    "noise_scale",
    "wall_s",
    "samples_per_s",
]


def agd_ray(*args, cwd=ROOT, timeout=300, env=None):
    """Run the command as a user would (a fresh process); returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "agd_ray.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else os.environ.copy(),
    )


@pytest.mark.ray
def test_train_writes_both_parquet_files(tmp_path):
    """On two workers (DDP over gloo), with a clean console: the project's lines only."""
    from test_console_ray import assert_clean, console_env

    run = agd_ray(
        "train",
        "experiments/quickstart.yaml",
        "--out",
        tmp_path,
        "--set",
        "train.epochs=2",
        "--set",
        "data.num_samples=2000",
        "--set",
        "name=cli",
        "--set",
        "scaling.num_workers=2",
        env=console_env(tmp_path),
    )
    assert_clean(run)
    lines = run.stdout.splitlines()
    assert lines[0].startswith("training fcn depth 4 width 256") and "2 worker(s)" in lines[0]
    assert [line[:12] for line in lines[1:3]] == ["epoch   1/2 ", "epoch   2/2 "]
    assert lines[3].startswith("completed: test_acc")
    assert len(lines) == 4 and run.stderr.strip() == ""
    trials = pq.read_table(tmp_path / "cli/trials.parquet").to_pylist()
    epochs = pq.read_table(tmp_path / "cli/epochs.parquet")
    assert len(trials) == 1
    (row,) = trials
    assert TRIAL_COLUMNS <= set(row)
    # the only other columns are config keys (dotted names)
    assert all("." in k for k in set(row) - TRIAL_COLUMNS)
    assert row["status"] == "completed" and row["optimizer.name"] == "agd"
    assert row["model.width"] == 256 and row["model.depth"] == 4
    assert row["params"] == 256 * 40 + 2 * 256 * 256 + 10 * 256
    # 2000 samples: 1600 train, of which data.val_fraction (0.1) is held out: 1440
    assert row["steps"] == 2 * (1440 // 128) and row["samples"] == 2 * (1440 // 128) * 128
    assert 0 < row["val_loss"] < 10 and row["val_loss"] != row["test_loss"]
    assert epochs.column_names == EPOCH_COLUMNS
    assert epochs.column("epoch").to_pylist() == [0, 1]
    assert epochs.column("test_acc").to_pylist()[-1] == pytest.approx(row["test_acc"])
    assert epochs.column("val_loss").to_pylist()[-1] == pytest.approx(row["val_loss"])
    assert epochs.column("samples").to_pylist() == [1440 // 128 * 128, row["samples"]]
    assert all(e > 0 for e in epochs.column("eta_mean").to_pylist())
    # the run is named after its config: the same command again is refused (before Ray)
    again = agd_ray("train", "experiments/quickstart.yaml", "--out", tmp_path, *run.args[7:])
    assert again.returncode == 2
    (line,) = again.stderr.strip().splitlines()
    assert "already holds a run of this config" in line and "--resume" in line


@pytest.mark.ray  # integration tier: a fresh Python process each
@pytest.mark.parametrize(
    "args,expected",
    [
        (["train", "missing.yaml"], "error: missing.yaml: no such file"),
        (
            ["train", "experiments/quickstart.yaml", "--set", "model.widht=3"],
            "error: model.widht: unknown key (did you mean 'width'?)",
        ),
        (
            ["train", "experiments/quickstart.yaml", "--set", "optimizer.name=sgd"],
            "error: optimizer.lr: sgd needs a learning rate",
        ),
        (
            ["train", "experiments/quickstart.yaml", "--set", "oops"],
            "error: --set: expected key.path=value",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(args, expected):
    run = agd_ray(*args, timeout=60)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), run.stderr
    assert "Traceback" not in run.stderr


def test_a_failed_report_says_so_in_one_line_and_keeps_the_results(monkeypatch, capsys, tmp_path):
    from types import SimpleNamespace

    from agd_ray.analysis import report

    def broken(*args, **kwargs):
        raise TypeError("unhashable type: 'numpy.ndarray'\nsecond line of the message")

    published = []
    monkeypatch.setattr(report, "make_report", broken)
    result = SimpleNamespace(out_dir=tmp_path, paths=SimpleNamespace(publish=published.append))
    assert report.report_after_sweep(result) is False
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: the report failed (TypeError: unhashable type")
    assert f"agd-ray report {tmp_path}" in err and published == []
