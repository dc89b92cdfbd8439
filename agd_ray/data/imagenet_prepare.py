"""``agd-ray data prepare-imagenet SRC DST``: ILSVRC2012 folders -> Parquet shards.

SRC is the ILSVRC2012 layout: ``train/<wnid>/*.JPEG`` and either ``val/<wnid>/*.JPEG``
or a flat ``val/*.JPEG`` with its ground-truth CSV (``LOC_val_solution.csv`` beside
``val/``: ``ImageId,PredictionString`` whose first token is the wnid). DST is a local
folder or an object-store URI (``s3://``, ``gs://``; through pyarrow.fs).

Writes ``DST/{train,val}/shard-NNNNN.parquet`` (columns ``image``: the JPEG bytes,
``label``: int32 class index, ``wnid``), ``DST/classes.json`` (wnids in label order),
``DST/skipped.txt`` (every file that did not decode, with the reason) and
``DST/manifest.json`` (counts). Every image is decoded once to check it. Each shard
is written atomically and then recorded in ``DST/_progress/``, so re-running
resumes: recorded shards are kept, the rest are written.
"""

from __future__ import annotations

import csv
import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from agd_ray.config import ConfigError

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
SCHEMA = pa.schema([("image", pa.binary()), ("label", pa.int32()), ("wnid", pa.string())])


@dataclass(frozen=True)
class ShardJob:
    split: str
    index: int
    files: tuple[tuple[str, int, str], ...]  # (path, label, wnid)
    root: str  # DST, as pyarrow.fs path
    uri: str  # DST as given (to rebuild the filesystem in a worker process)


def list_split(src: Path, split: str, classes: list[str]) -> list[tuple[str, int, str]]:
    """(path, label, wnid) for every file of a split, sorted (stable shard contents)."""
    folder = src / split
    label_of = {w: i for i, w in enumerate(classes)}
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if subdirs:
        return [
            (str(f), label_of[d.name], d.name)
            for d in subdirs
            if d.name in label_of
            for f in sorted(d.iterdir())
            if f.is_file()
        ]
    labels = read_val_csv(src)
    files = []
    for f in sorted(folder.iterdir()):
        if f.is_file():
            wnid = labels.get(f.stem)
            if wnid is None:
                raise ConfigError(str(f), "not in the validation ground-truth CSV")
            files.append((str(f), label_of[wnid], wnid))
    return files


def read_val_csv(src: Path) -> dict[str, str]:
    for name in ("LOC_val_solution.csv", "val_labels.csv", "val/LOC_val_solution.csv"):
        path = src / name
        if path.is_file():
            with path.open() as f:
                return {
                    row["ImageId"]: row["PredictionString"].split()[0] for row in csv.DictReader(f)
                }
    raise ConfigError(str(src / "val"), "flat val/ needs LOC_val_solution.csv beside it")


def check_image(data: bytes) -> str | None:
    """None if the bytes decode as an image, else why not."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.convert("RGB").load()
    except Exception as err:  # PIL raises many kinds for bad files
        return f"{type(err).__name__}: {err}".replace("\n", " ")
    return None


def write_shard(job: ShardJob) -> dict:
    """Decode-check the shard's files, write the shard and its sidecar; return counts."""
    fs, _ = pafs.FileSystem.from_uri(job.uri)
    rows, skipped = [], []
    for path, label, wnid in job.files:
        if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((path, "not an image file"))
            continue
        data = Path(path).read_bytes()
        problem = check_image(data)
        if problem:
            skipped.append((path, problem))
            continue
        rows.append({"image": data, "label": label, "wnid": wnid})
    shard = f"{job.root}/{job.split}/shard-{job.index:05d}.parquet"
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    tmp = f"{job.root}/_progress/{job.split}-{job.index:05d}.parquet.tmp"
    with fs.open_output_stream(tmp) as out:
        pq.write_table(table, out)
    fs.move(tmp, shard)
    record = {"split": job.split, "index": job.index, "images": len(rows), "skipped": skipped}
    # written last: marks the shard done
    _write_text(fs, _record_path(job.root, job.split, job.index), json.dumps(record))
    return record


def _record_path(root: str, split: str, index: int) -> str:
    """Progress records live outside the split folders, which hold only shards."""
    return f"{root}/_progress/{split}-{index:05d}.json"


def prepare_imagenet(
    src: str, dst: str, shard_size: int = 1024, workers: int | None = None, echo=print
) -> dict:
    src_path = Path(src)
    for split in ("train", "val"):
        if not (src_path / split).is_dir():
            raise ConfigError(str(src_path / split), "no such folder (expected ILSVRC2012 layout)")
    classes = sorted(p.name for p in (src_path / "train").iterdir() if p.is_dir())
    if not classes:
        raise ConfigError(str(src_path / "train"), "no class folders (train/<wnid>/)")
    uri = dst if "://" in dst else str(Path(dst).resolve())
    fs, root = pafs.FileSystem.from_uri(uri)
    jobs, done = [], []
    fs.create_dir(f"{root}/_progress", recursive=True)
    for split in ("train", "val"):
        fs.create_dir(f"{root}/{split}", recursive=True)
        files = list_split(src_path, split, classes)
        for i in range(0, len(files), shard_size):
            job = ShardJob(split, i // shard_size, tuple(files[i : i + shard_size]), root, uri)
            record = _read_record(fs, _record_path(root, split, job.index))
            (done if record else jobs).append(record or job)
    total = sum(len(j.files) for j in jobs)
    if done:
        echo(f"resuming: {len(done)} shards already written, {len(jobs)} to go")
    from tqdm import tqdm

    with tqdm(total=total, unit="img", desc="prepare-imagenet", disable=total == 0) as bar:
        with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
            for job, record in zip(jobs, pool.map(write_shard, jobs), strict=True):
                done.append(record)
                bar.update(len(job.files))
    skipped = sorted((s for r in done for s in r["skipped"]), key=lambda s: s[0])
    counts = {
        split: sum(r["images"] for r in done if r["split"] == split) for split in ("train", "val")
    }
    manifest = {
        "classes": len(classes),
        "images": counts,
        "skipped": len(skipped),
        "shards": {s: sum(1 for r in done if r["split"] == s) for s in ("train", "val")},
    }
    _write_text(fs, f"{root}/classes.json", json.dumps(classes))
    _write_text(fs, f"{root}/skipped.txt", "".join(f"{p}\t{why}\n" for p, why in skipped))
    _write_text(fs, f"{root}/manifest.json", json.dumps(manifest, indent=2))
    echo(
        f"{counts['train']} train and {counts['val']} val images in "
        f"{manifest['shards']['train'] + manifest['shards']['val']} shards, "
        f"{len(classes)} classes, {len(skipped)} skipped (listed in skipped.txt) -> {dst}"
    )
    return manifest


def _read_record(fs, path: str) -> dict | None:
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.read())
    except (FileNotFoundError, OSError, json.JSONDecodeError):
        return None


def _write_text(fs, path: str, text: str) -> None:
    with fs.open_output_stream(path) as out:
        out.write(text.encode())
