"""Where a run's results live, and where they came from.

A sweep (or an ``agd-ray train`` run) named NAME has three places:

- ``out_dir`` = OUT/NAME on the driver's disk: the Parquet files and the report are
  written here first (with ``scaling.storage_path`` set it is only a cache);
- ``home``: where the results live for good: ``<scaling.storage_path>/NAME`` (a
  folder, ``s3://`` or ``gs://``), else ``out_dir`` itself. Every result file
  written to ``out_dir`` is copied there (``RunPaths.publish``), so ``agd-ray
  report`` and ``--resume`` work from the home alone, on another machine;
- ``storage``: Ray's storage (Tune's experiment, Train's runs and checkpoints, the
  trials' outcomes): ``home`` when it is on storage, else OUT/NAME/ray.

Files are moved through ``pyarrow.fs``, which reads credentials and endpoints from
the environment (``AWS_*``, ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``)
as Ray's storage does.

Provenance (``provenance``): the git commit, the versions of agd-ray, torch and Ray,
and the config's hash, written into every Parquet file's schema metadata and every
W&B run's config.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from pydantic import BaseModel

CONFIG_FILE = "config.yaml"  # the validated config, in every home


def is_uri(path: str | Path) -> bool:
    return "://" in str(path)


def resolve_uri(path: str | Path) -> str:
    """Absolute local path, or the URI unchanged."""
    return str(path) if is_uri(path) else str(Path(path).expanduser().resolve())


class Storage:
    """A folder or object-store prefix, read and written through pyarrow.fs."""

    def __init__(self, uri: str | Path):
        self.uri = resolve_uri(uri).rstrip("/")
        self.fs, self.root = pafs.FileSystem.from_uri(self.uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def exists(self, rel: str = "") -> bool:
        return self.fs.get_file_info(self._path(rel)).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes | None:
        """The file's bytes, or None when there is no such file."""
        try:
            with self.fs.open_input_stream(self._path(rel)) as f:
                return f.read()
        except (FileNotFoundError, OSError):
            return None

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file whole: via a temporary name and a move, so that a reader
        never sees half of it."""
        path = self._path(rel)
        self.fs.create_dir(os.path.dirname(path), recursive=True)
        tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, path)

    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(self._path(rel))
        except (FileNotFoundError, OSError):
            pass

    def listdir(self, rel: str = "") -> list[str]:
        """The names directly under ``rel``, sorted ([] when it does not exist)."""
        selector = pafs.FileSelector(self._path(rel), allow_not_found=True)
        return sorted(os.path.basename(i.path) for i in self.fs.get_file_info(selector))

    def delete_dir(self, rel: str) -> None:
        try:
            self.fs.delete_dir(self._path(rel))
        except (FileNotFoundError, OSError):
            pass

    def upload(self, local: Path, rel: str) -> None:
        """Copy a local file, or a folder with everything in it, to ``rel``."""
        if local.is_file():
            self.write_bytes(rel, local.read_bytes())
            return
        self.fs.create_dir(self._path(rel), recursive=True)
        pafs.copy_files(
            str(local),
            self._path(rel),
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=self.fs,
        )

    def download(self, rel: str, local: Path) -> Path:
        """Copy ``rel`` (a file or a folder) to ``local``."""
        local.parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(
            self._path(rel),
            str(local),
            source_filesystem=self.fs,
            destination_filesystem=pafs.LocalFileSystem(),
        )
        return local


@dataclass(frozen=True)
class RunPaths:
    out_dir: Path  # OUT/<name> on the driver: results written here first
    home: str  # where the results live for good (== out_dir without storage_path)
    storage: str  # Ray's storage: Tune experiment, Train runs, outcomes

    @property
    def outcomes(self) -> str:
        return f"{self.storage}/outcomes"

    @property
    def train_runs(self) -> str:
        return f"{self.storage}/train"

    @property
    def tune_experiment(self) -> str:
        return f"{self.storage}/tune"

    @property
    def remote(self) -> bool:
        """The home is somewhere else than out_dir (storage_path is set)."""
        return self.home != str(self.out_dir)

    def publish(self, *names: str) -> None:
        """Copy these files or folders of out_dir to the home (when it is elsewhere)."""
        if not self.remote:
            return
        home = Storage(self.home)
        for name in names:
            if (self.out_dir / name).exists():
                home.upload(self.out_dir / name, name)


def run_paths(
    cfg: BaseModel,  # an ExperimentConfig (config.py imports this module)
    out: str | Path,
) -> RunPaths:
    out_dir = Path(out).resolve() / cfg.name
    if cfg.scaling.storage_path:
        home = f"{resolve_uri(cfg.scaling.storage_path).rstrip('/')}/{cfg.name}"
        return RunPaths(out_dir, home, home)
    return RunPaths(out_dir, str(out_dir), str(out_dir / "ray"))


def config_hash(cfg: BaseModel) -> str:
    """A short hash of everything that defines the runs (W&B settings excluded)."""
    dump = cfg.model_dump(mode="json", exclude={"wandb"})
    return hashlib.sha256(json.dumps(dump, sort_keys=True).encode()).hexdigest()[:16]


@functools.cache
def _git_commit() -> str | None:
    """The commit of the checkout agd-ray runs from (``-dirty`` with uncommitted
    changes), or the one ``agd-ray submit`` recorded (a job's working dir has no
    .git), or None outside a checkout."""
    if os.environ.get("AGD_RAY_GIT_COMMIT"):
        return os.environ["AGD_RAY_GIT_COMMIT"]
    here = str(Path(__file__).resolve().parent)
    try:
        commit = _run("git", "-C", here, "rev-parse", "HEAD")
        dirty = _run("git", "-C", here, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def provenance(cfg: BaseModel, data: dict[str, str] | None = None) -> dict[str, Any]:
    """Where a result came from: code, package versions, config, and ``data``: each
    corpus's fingerprint by dataset name (pysrc differs between Python versions)."""
    return {
        "git_commit": _git_commit(),
        "agd_ray": _version("agd-ray"),
        "torch": _version("torch"),
        "ray": _version("ray"),
        "python": platform.python_version(),
        "config_hash": config_hash(cfg),
        **({"data": data} if data else {}),
    }
