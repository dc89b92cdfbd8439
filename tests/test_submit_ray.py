"""`agd-ray submit` to a real local Ray head started by the test (stopped by its pid)."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_cli import ROOT, agd_ray

BIN = Path(sys.executable).parent
SECRET = f"planted-{uuid.uuid4().hex}"  # made here: the job's copy of this file has no key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ray
def test_submit_runs_the_sweep_as_a_job(tmp_path):
    port, dashboard = free_port(), free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: socket paths <= 107
    head = subprocess.Popen(
        [
            BIN / "ray",
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            # the agents' default ports clash with any other Ray on this machine
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--num-cpus=2",
            "--block",
            f"--temp-dir={temp_dir}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "head.log").open("w"),
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "the Ray head did not come up"
                assert head.poll() is None, (tmp_path / "head.log").read_text()[-2000:]
                time.sleep(1)
        out = tmp_path / "results"
        elsewhere = tmp_path / "my-configs/study.yaml"  # outside the project folder
        elsewhere.parent.mkdir()
        elsewhere.write_text((ROOT / "experiments/quickstart.yaml").read_text())
        run = agd_ray(
            "submit",
            elsewhere,
            "--out",
            out,
            "--set",
            "name=sub",
            "--set",
            "data.num_samples=1000",
            "--set",
            "train.epochs=2",
            "--set",
            "sweep.grid={model.width: [16, 32]}",
            "--set",
            "sweep.baselines=[]",
            "--set",
            "sweep.report=false",
            "--set",
            "wandb.mode=disabled",
            # no --address: RAY_API_SERVER_ADDRESS, as Ray's own job CLI reads it
            env={**env, "WANDB_API_KEY": SECRET, "RAY_API_SERVER_ADDRESS": address},
            timeout=400,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "SUCCEEDED" in run.stdout
        assert "[2/2]" in run.stdout  # the job's own progress lines were streamed
        assert not (ROOT / ".agd-ray-submit").exists()  # the shipped config is not left here
        trials = pq.read_table(out / "sub/trials.parquet").to_pylist()
        assert [t["status"] for t in trials] == ["completed", "completed"]

        # The key reached the job through its runtime environment only...
        from ray.job_submission import JobSubmissionClient

        job_id = run.stdout.split("submitted job ")[1].split()[0]
        info = JobSubmissionClient(address).get_job_info(job_id)
        assert info.runtime_env["env_vars"]["WANDB_API_KEY"] == SECRET
        # ...and was written nowhere we write: results, checkpoints, the job's logs, the
        # head's logs. Ray's own runtime-env agent logs every runtime env it creates,
        # env_vars included (Ray 2.60, runtime_env_agent.py): the one place it shows,
        # documented in cluster/README.md.
        assert SECRET not in run.stdout + run.stderr
        written = [p for p in (*out.rglob("*"), *Path(temp_dir).rglob("*")) if p.is_file()]
        assert len(written) > 10
        leaked = {p.name for p in written if SECRET.encode() in p.read_bytes()}
        assert leaked <= {"runtime_env_agent.log"}, leaked
    finally:
        head.send_signal(signal.SIGTERM)
        head.wait(timeout=60)


@pytest.mark.ray  # integration tier: a fresh Python process
def test_unreachable_address_is_a_one_line_error():
    port = free_port()  # nothing listens there
    run = agd_ray(
        "submit", "experiments/quickstart.yaml", "--address", f"http://127.0.0.1:{port}", timeout=60
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --address: cannot reach"), run.stderr


@pytest.mark.ray  # integration tier: a fresh Python process
def test_bad_config_is_refused_before_submitting():
    run = agd_ray(
        "submit",
        "experiments/quickstart.yaml",
        "--address",
        "http://127.0.0.1:1",
        "--set",
        "model.widht=3",
        timeout=60,
    )
    assert run.returncode == 2
    assert run.stderr.strip().startswith("error: model.widht: unknown key")


class FlakyClient:
    """A job client whose first submissions fail as a starting head's do."""

    def __init__(self, *errors, reached=False):
        self.errors = list(errors)
        self.reached = reached  # the failed request got through before the reset
        self.jobs = []

    def submit_job(self, **job):
        if self.jobs and self.jobs[-1] == job["submission_id"]:
            raise RuntimeError(
                f"Request failed with status code 500: Job with submission_id "
                f"{job['submission_id']} already exists. Please use a different submission_id."
            )
        if self.errors:
            if self.reached:
                self.jobs.append(job["submission_id"])
            raise self.errors.pop(0)
        self.jobs.append(job["submission_id"])
        return job["submission_id"]


def test_submit_retries_transient_connection_errors():
    import requests

    from agd_ray.submit import _submit_when_ready

    reset = requests.exceptions.ConnectionError(
        "('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))"
    )
    wrapped = RuntimeError("upload failed")
    wrapped.__cause__ = ConnectionResetError(104, "Connection reset by peer")
    client = FlakyClient(
        RuntimeError("Request failed with status code 503: No available agent to submit job"),
        reset,
        ConnectionResetError(104, "Connection reset by peer"),
        wrapped,
    )
    said = []
    job_id = _submit_when_ready(client, pause_s=0, echo=said.append, entrypoint="true")
    assert client.jobs == [job_id] and job_id.startswith("agd-ray-")
    assert len(said) == 1 and said[0].startswith("the head is not ready")


def test_a_retry_after_a_request_that_got_through_does_not_submit_twice():
    from agd_ray.submit import _submit_when_ready

    client = FlakyClient(ConnectionResetError(104, "Connection reset by peer"), reached=True)
    job_id = _submit_when_ready(client, pause_s=0, echo=lambda line: None, entrypoint="true")
    assert client.jobs == [job_id]


def test_other_errors_and_a_head_that_never_comes_are_not_retried_forever():
    from agd_ray.submit import _submit_when_ready

    client = FlakyClient(RuntimeError("Request failed with status code 400: bad runtime_env"))
    with pytest.raises(RuntimeError, match="bad runtime_env"):
        _submit_when_ready(client, pause_s=0, echo=lambda line: None, entrypoint="true")
    assert client.errors == []  # one attempt

    client = FlakyClient(*[ConnectionResetError(104, "reset")] * 1000)
    with pytest.raises(ConnectionResetError):
        _submit_when_ready(client, wait_s=0.2, pause_s=0.01, echo=lambda line: None, entrypoint="x")
    assert len(client.errors) > 0  # gave up
