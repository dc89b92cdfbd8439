"""Results on an S3 home (moto's server on loopback, started here and stopped by its
pid): a sweep's results, report, W&B runs and resume live on the URI alone; a second
driver is refused while the first holds the home; a killed driver's hold does not
block --resume."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from test_cli import agd_ray

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
HOME = "s3://bucket/study/ons3"


def remove_when_quiet(path: Path, within_s: float = 30.0) -> None:
    """Delete ``path``, retrying while a straggler of the killed driver (W&B's writer,
    in its own session, finishing its offline run) still adds files to it."""
    deadline = time.time() + within_s
    while True:
        try:
            shutil.rmtree(path)
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, log.read_text()
                time.sleep(0.2)
        import boto3

        boto3.client("s3").create_bucket(Bucket="bucket")
        yield pafs.FileSystem.from_uri(HOME)[0]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


ARGS = [
    "--set", "name=ons3",
    "--set", "data.num_samples=2000",
    "--set", "train.epochs=12",
    "--set", "train.batch_size=16",
    "--set", "sweep.grid={model.depth: [2], model.width: [16, 32]}",
    "--set", "sweep.max_concurrent_trials=1",
    "--set", "sweep.baselines=[]",
    "--set", "train.checkpoint_min_s=0",
    "--set", "scaling.storage_path=s3://bucket/study",
]  # fmt: skip


def _held(fs) -> bool:
    info = fs.get_file_info(f"{HOME.removeprefix('s3://')}/.agd-ray.lock")
    return info.type == pafs.FileType.File


def _files(fs, prefix: str) -> list[str]:
    root = HOME.removeprefix("s3://")
    selector = pafs.FileSelector(f"{root}/{prefix}", recursive=True, allow_not_found=True)
    return [i.path for i in fs.get_file_info(selector) if i.type == pafs.FileType.File]


def test_a_sweep_lives_on_its_storage_uri(s3, tmp_path):
    local = tmp_path / "driver-cache"
    driver = subprocess.Popen(
        [sys.executable, "-m", "agd_ray.cli", "sweep", "experiments/quickstart.yaml",
         "--out", str(local), *ARGS],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while not _held(s3):
            assert time.time() < deadline and driver.poll() is None, driver.stdout.read()
            time.sleep(0.2)
        # a second driver on the same home is refused in one line, before Ray starts
        second = agd_ray("sweep", "experiments/quickstart.yaml", "--out", tmp_path / "b", *ARGS)
        assert second.returncode == 2
        (line,) = second.stderr.strip().splitlines()
        assert line.startswith(f"error: {HOME}: is in use by another driver (pid {driver.pid} ")
        # kill the driver (and its Ray) once one trial has finished
        deadline = time.time() + 240
        while not _files(s3, "outcomes"):
            assert time.time() < deadline and driver.poll() is None, driver.stdout.read()
            time.sleep(0.5)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    remove_when_quiet(local)

    # From the URI alone (its config.yaml), into a fresh cache; the dead driver's
    # hold is taken over.
    resumed = agd_ray("sweep", HOME, "--resume", "--out", tmp_path / "elsewhere", timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stdout + resumed.stderr
    root = HOME.removeprefix("s3://")
    trials = pq.read_table(f"{root}/trials.parquet", filesystem=s3).to_pylist()
    assert sorted(t["model.width"] for t in trials) == [16, 32]
    assert all(t["status"] == "completed" and t["steps"] > 0 for t in trials)
    meta = pq.read_schema(f"{root}/trials.parquet", filesystem=s3).metadata
    assert b"config_hash" in meta[b"agd_ray.provenance"]
    assert any(p.endswith(".wandb") for p in _files(s3, "wandb"))  # offline W&B runs
    assert not _held(s3)  # released

    # the report, from another folder, with nothing local
    report = agd_ray("report", HOME, cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    assert any(p.endswith("report/report.html") for p in _files(s3, "report"))
