"""prepare-imagenet on a generated JPEG tree with a corrupt file and a non-image."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
WNIDS = ["n01440764", "n01443537", "n01484850"]


def make_tree(src: Path, per_class=5, flat_val=False):
    for split, n in (("train", per_class), ("val", 2)):
        for c, wnid in enumerate(WNIDS):
            folder = src / split / wnid if not (flat_val and split == "val") else src / split
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                name = f"{wnid}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{c}{i:04d}.JPEG"
                Image.new("RGB", (40 + i, 30), (40 * c, 10 * i, 90)).save(folder / name, "JPEG")
    if flat_val:
        rows = ["ImageId,PredictionString"] + [
            f"ILSVRC2012_val_{c}{i:04d},{wnid} 1 2 3 4"
            for c, wnid in enumerate(WNIDS)
            for i in range(2)
        ]
        (src / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    (src / "train" / WNIDS[0] / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "train" / WNIDS[1] / "notes.txt").write_text("not an image")


def prepare(src, dst, *extra):
    cmd = [
        sys.executable,
        "-m",
        "agd_ray.cli",
        "data",
        "prepare-imagenet",
        str(src),
        str(dst),
        "--shard-size",
        "4",
        "--workers",
        "2",
        *extra,
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.ray  # integration tier: a process pool decoding JPEGs
@pytest.mark.parametrize("flat_val", [False, True])
def test_prepare_writes_shards_and_lists_skipped_files(tmp_path, flat_val):
    src, dst = tmp_path / "ilsvrc", tmp_path / "shards"
    make_tree(src, flat_val=flat_val)
    run = prepare(src, dst)
    assert run.returncode == 0, run.stderr
    assert json.loads((dst / "classes.json").read_text()) == WNIDS
    manifest = json.loads((dst / "manifest.json").read_text())
    assert manifest["images"] == {"train": 15, "val": 6}
    assert manifest["skipped"] == 2
    skipped = (dst / "skipped.txt").read_text().splitlines()
    assert any("broken.JPEG" in line for line in skipped)
    assert any("notes.txt" in line and "not an image" in line for line in skipped)
    train = pq.read_table(dst / "train").to_pylist()
    val = pq.read_table(dst / "val").to_pylist()
    assert len(train) == 15 and len(val) == 6
    for row in train + val:
        assert WNIDS[row["label"]] == row["wnid"]
        assert row["image"][:2] == b"\xff\xd8"  # JPEG bytes as they were
    assert sorted(r["label"] for r in val) == [0, 0, 1, 1, 2, 2]


@pytest.mark.ray  # integration tier: two runs of a process pool
def test_rerun_resumes_instead_of_starting_over(tmp_path):
    src, dst = tmp_path / "ilsvrc", tmp_path / "shards"
    make_tree(src)
    assert prepare(src, dst).returncode == 0
    shards = sorted((dst / "train").glob("*.parquet"))
    mtimes = {p: p.stat().st_mtime_ns for p in shards}
    # lose one shard (as if interrupted before it was written)
    shards[-1].unlink()
    (
        dst / "_progress" / shards[-1].name.replace("shard", "train").replace(".parquet", ".json")
    ).unlink()
    run = prepare(src, dst)
    assert run.returncode == 0 and "resuming" in run.stdout
    for p in shards[:-1]:
        assert p.stat().st_mtime_ns == mtimes[p]  # kept, not rewritten
    assert len(pq.read_table(dst / "train")) == 15


@pytest.mark.ray  # integration tier: a fresh Python process
def test_missing_source_is_a_one_line_error(tmp_path):
    run = prepare(tmp_path / "nope", tmp_path / "out")
    assert run.returncode == 2
    assert run.stderr.strip().startswith(f"error: {tmp_path / 'nope' / 'train'}: no such folder")
