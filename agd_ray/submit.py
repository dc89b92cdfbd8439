"""``agd-ray submit CONFIG --address URL``: run ``agd-ray sweep`` on a Ray cluster as a
Ray job (Job Submission SDK), with the project folder as its working directory.

The config is validated here first. W&B settings and the API key travel from the
submitter's environment in the job's runtime environment (``env_vars``), never in a
file. The job's logs are streamed; the exit status is the job's final status
(0 when it SUCCEEDED).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from pathlib import Path

from agd_ray.config import ConfigError, load_config

# Passed to the job from the submitter's environment when set.
FORWARDED_ENV = (
    "WANDB_API_KEY",
    "WANDB_MODE",
    "WANDB_PROJECT",
    "WANDB_ENTITY",
    "WANDB_BASE_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "GOOGLE_APPLICATION_CREDENTIALS",
)
# gitignore syntax: anchored with "/", or "data" would also drop agd_ray/data/.
EXCLUDES = [
    "/.venv",
    "/.git",
    "/results",
    "/wandb",
    "/data",
    "__pycache__",
    "/.pytest_cache",
    "/.ruff_cache",
]


def job_entrypoint(config: str, overrides: list[str], out: str | None) -> str:
    args = ["agd-ray", "sweep", config]
    for item in overrides:
        args += ["--set", item]
    if out:
        args += ["--out", out]
    return shlex.join(args)


def _submit_when_ready(client, wait_s: float = 90.0, **job) -> str:
    """Submit; a head that has just started answers "No available agent" until its
    job agent registers, so that answer is retried for up to ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as err:
            if "No available agent" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def submit(
    config: str,
    address: str,
    overrides: list[str] = (),
    out: str | None = None,
    wait: bool = True,
    working_dir: str = ".",
    echo=print,
) -> int:
    load_config(config, list(overrides))  # refuse bad input before anything is sent
    root = Path(working_dir).resolve()
    try:
        relative = Path(config).resolve().relative_to(root)
    except ValueError:
        raise ConfigError(
            config, f"must be inside the working directory sent with the job ({root})"
        ) from None

    from ray.job_submission import JobStatus, JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
    except Exception as err:  # connection refused, bad URL, no dashboard
        raise ConfigError(
            "--address", f"cannot reach a Ray dashboard at {address}: {err}"
        ) from None
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    job_id = _submit_when_ready(
        client,
        entrypoint=job_entrypoint(str(relative), list(overrides), out),
        runtime_env={"working_dir": str(root), "excludes": EXCLUDES, "env_vars": env},
    )
    echo(f"submitted job {job_id} to {address}")
    if not wait:
        echo(f"follow it with: ray job logs --address {address} --follow {job_id}")
        return 0

    async def stream():
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    asyncio.run(stream())
    status = client.get_job_status(job_id)
    echo(f"job {job_id}: {status.value}")
    return 0 if status == JobStatus.SUCCEEDED else 1
