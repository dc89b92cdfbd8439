"""``agd-ray submit CONFIG [--address URL]``: run ``agd-ray sweep`` on a Ray cluster as
a Ray job (Job Submission SDK), with the project folder as its working directory.

The config is validated here first and shipped with the job as validated. W&B
settings and the API key travel from the submitter's environment in the job's
runtime environment (``env_vars``), never in a file. The job's logs are streamed;
the exit status is the job's final status (0 when it SUCCEEDED).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import sys
import time
import uuid
from pathlib import Path

from agd_ray.config import ConfigError, dump_config, load_config
from agd_ray.storage import provenance, run_paths

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


def job_entrypoint(
    config: str, overrides: list[str], out: str | None, verbose: bool = False
) -> str:
    args = ["agd-ray", "sweep", config]
    for item in overrides:
        args += ["--set", item]
    if out:
        args += ["--out", out]
    if verbose:
        args.append("--verbose")
    return shlex.join(args)


# What a head that is starting (or busy) answers for a while: its job agent has not
# registered yet, or its dashboard drops the connection (seen inside submit_job,
# while the working dir was uploaded). requests' ConnectionError is an OSError.
TRANSIENT_MESSAGES = (
    "No available agent",
    "Connection reset",
    "Connection aborted",
    "Connection refused",
    "Connection lost",
    "RemoteDisconnected",
    "status code 502",
    "status code 503",
    "status code 504",
)


def is_transient(err: BaseException) -> bool:
    """A connection error, or a RuntimeError that wraps or reports one (the job SDK
    turns HTTP failures into RuntimeError), anywhere in the exception's chain."""
    import requests

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (ConnectionError, requests.exceptions.ConnectionError)):
            return True
        if isinstance(err, requests.exceptions.ChunkedEncodingError):  # reset mid-reply
            return True
        if isinstance(err, RuntimeError) and any(m in str(err) for m in TRANSIENT_MESSAGES):
            return True
        err = err.__cause__ or err.__context__
    return False


def _submit_when_ready(
    client, wait_s: float = 90.0, pause_s: float = 2.0, echo=print, **job
) -> str:
    """Submit, retrying transient errors (``is_transient``) for up to ``wait_s``
    seconds. The job's submission id is chosen here, so a retry after a request that
    did reach the head ("already exists") is recognised as submitted, never doubled."""
    job.setdefault("submission_id", f"agd-ray-{uuid.uuid4().hex[:16]}")
    deadline = time.monotonic() + wait_s
    failed_once = False
    while True:
        try:
            return client.submit_job(**job)
        except Exception as err:
            if failed_once and "already exists" in str(err):
                return job["submission_id"]  # the earlier attempt got through
            if not is_transient(err) or time.monotonic() > deadline:
                raise
            if not failed_once:
                echo(f"the head is not ready ({type(err).__name__}); retrying for {wait_s:.0f}s")
            failed_once = True
            time.sleep(pause_s)


SUBMITTED = ".agd-ray-submit"  # in the working dir while a job's package is uploaded


def submit(
    config: str,
    address: str | None,
    overrides: list[str] = (),
    out: str | None = None,
    wait: bool = True,
    working_dir: str = ".",
    echo=print,
    verbose: bool = False,
) -> int:
    """Validate ``config`` (with ``overrides``) here, then run ``agd-ray sweep`` on it
    as a Ray job. The validated config travels with the job: it is written to
    ``SUBMITTED/<job id>.yaml`` in the working dir while the job's package is made
    and uploaded, then removed (so the config file itself may live anywhere; the
    job keeps it as config.yaml in its results). ``address`` None:
    ``RAY_API_SERVER_ADDRESS``, then ``RAY_ADDRESS`` (as Ray's job CLI)."""
    cfg = load_config(config, list(overrides))  # refuse bad input before anything is sent
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ConfigError(
            "--address", "no cluster given: pass --address or set RAY_API_SERVER_ADDRESS"
        )
    root = Path(working_dir).resolve()

    from ray.job_submission import JobStatus, JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
    except Exception as err:  # connection refused, bad URL, no dashboard
        raise ConfigError(
            "--address", f"cannot reach a Ray dashboard at {address}: {err}"
        ) from None
    job_id = f"agd-ray-{uuid.uuid4().hex[:16]}"
    shipped = Path(SUBMITTED) / f"{job_id}.yaml"
    (root / shipped).parent.mkdir(parents=True, exist_ok=True)
    (root / shipped).write_text(dump_config(cfg))
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    commit = provenance(cfg)["git_commit"]
    if commit:  # the job's working dir has no .git
        env["AGD_RAY_GIT_COMMIT"] = commit
    try:
        job_id = _submit_when_ready(
            client,
            echo=echo,
            submission_id=job_id,
            entrypoint=job_entrypoint(str(shipped), [], out, verbose),
            runtime_env={"working_dir": str(root), "excludes": EXCLUDES, "env_vars": env},
        )
    finally:
        (root / shipped).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # another submission may be using it
            (root / SUBMITTED).rmdir()
    echo(f"submitted job {job_id} to {address}")
    echo(f"results: {_results_place(cfg, out)}")
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
    echo(f"results: {_results_place(cfg, out)}")
    return 0 if status == JobStatus.SUCCEEDED else 1


def _results_place(cfg, out: str | None) -> str:
    if cfg.scaling.storage_path:
        return run_paths(cfg, out or "results").home
    where = f"{out}/{cfg.name}" if out else f"results/{cfg.name} in the job's working dir"
    return (
        f"{where} on the cluster's head node (lost with the cluster; set "
        "scaling.storage_path to keep them)"
    )
