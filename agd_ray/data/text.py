"""Text corpora for GPT models, and the windows they are trained on.

    corpus = load_pysrc()                      # the embedded default (no download)
    corpus = load_token_bins("data/owt")       # nanoGPT's train.bin / val.bin
    train = windows(corpus.train, context=256)
    val = windows(corpus.val, context=256, limit=512, split="val")

    # large corpora: Parquet shards streamed through Ray Data (``text_stream``)

A window is context + 1 consecutive tokens: x its first ``context``, y its last
``context`` (x shifted by one: the next-token targets). Windows start every
``context`` tokens, so no token is a target twice.

``pysrc`` is the Python standard library's own ``.py`` sources as bytes (vocab 256):
every Python has them. The rule is fixed: every ``*.py`` under
``sysconfig.get_paths()["stdlib"]`` outside PYSRC_SKIP folders (installed packages,
and the test suites, whose thousands of near-identical test cases would flood the
corpus with boilerplate), by POSIX relative path, each file whole in the split
``split_of`` gives it (about 90 / 5 / 5 %). Files differ between Python versions:
the fingerprint, a sha256 over every (path, contents) in order, tells them apart.

Token corpora come from ``agd-ray data prepare-text`` (``text_prepare``) or
nanoGPT's ``prepare.py``: uint16 ``.bin`` files, memory-mapped, or Parquet shards
(``{train,val,test}/*.parquet``, column ``ids``) streamed by Ray Data
(``agd_ray.data.text_stream``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agd_ray.config import ConfigError
from agd_ray.data.mnist1d import default_cache_dir

SPLITS = ("train", "val", "test")
PYSRC_SKIP = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
)
PYSRC_RULE = b"pysrc-v1"  # change it with the rule above: old caches are then ignored


@dataclass(frozen=True)
class TextCorpus:
    """Three splits of token ids (1-D arrays, possibly memory-mapped); ``val`` is
    None when the corpus has no validation split. ``unit`` is "byte" when a token
    is a byte (losses are then also reported in bits per byte), else "token"."""

    name: str
    train: np.ndarray
    val: np.ndarray | None
    test: np.ndarray
    vocab: int
    fingerprint: str
    unit: str


def split_of(relpath: str, val_fraction: float = 0.05, test_fraction: float = 0.05) -> str:
    """The split of a file, from its relative path alone: the first 8 bytes of
    sha256(path) as a fraction u of 2**64; u < 1 - val - test is train, then val,
    then test. Stable across runs and machines, and adding a file moves no other."""
    u = int.from_bytes(hashlib.sha256(relpath.encode()).digest()[:8], "big") / 2**64
    if u < 1 - val_fraction - test_fraction:
        return "train"
    return "val" if u < 1 - test_fraction else "test"


def pysrc_files(stdlib: Path) -> list[str]:
    """The POSIX relative paths of the corpus' files, sorted (see the module doc)."""
    files = []
    for folder, dirs, names in os.walk(stdlib):
        dirs[:] = [d for d in dirs if d not in PYSRC_SKIP]  # not even listed
        rel = Path(folder).relative_to(stdlib)
        files += [
            (rel / n).as_posix()
            for n in names
            if n.endswith(".py") and os.path.isfile(os.path.join(folder, n))
        ]
    return sorted(files)


def load_pysrc(cache_dir: str | None = None, stdlib: str | None = None) -> TextCorpus:
    """The pysrc corpus of this Python (``stdlib``: another source folder, for tests).

    Built once and cached as ``<cache>/pysrc-<key>.npz``; the key hashes this
    Python's version, the folder and every file's path, size and mtime, so an
    edited or upgraded standard library is rebuilt."""
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    files = pysrc_files(root)
    if not files:
        raise ConfigError(str(root), "no .py files here to build the pysrc corpus from")
    stats = []
    for rel in files:
        st = (root / rel).stat()
        stats.append((rel, st.st_size, st.st_mtime_ns))
    key = json.dumps([PYSRC_RULE.decode(), sys.version, str(root), stats])
    name = f"pysrc-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    path = Path(cache_dir or default_cache_dir()) / name
    if not path.exists():
        arrays = _build_pysrc(root, files)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)  # atomic: concurrent workers never read a half-written file
    with np.load(path) as f:
        splits = {s: f[s] for s in SPLITS}
        fingerprint = str(f["fingerprint"])
    return TextCorpus("pysrc", **splits, vocab=256, fingerprint=fingerprint, unit="byte")


def _build_pysrc(root: Path, files: list[str]) -> dict[str, np.ndarray]:
    parts: dict[str, list[bytes]] = {s: [] for s in SPLITS}
    h = hashlib.sha256(PYSRC_RULE)
    for rel in files:
        data = (root / rel).read_bytes()
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        h.update(len(data).to_bytes(8, "little") + data)
        parts[split_of(rel)].append(data)
    arrays = {s: np.frombuffer(b"".join(p), np.uint8) for s, p in parts.items()}
    return {**arrays, "fingerprint": np.array(h.hexdigest())}


def load_token_bins(root: str, vocab: int | None = None) -> TextCorpus:
    """nanoGPT's layout: ``train.bin``, ``val.bin`` and optionally ``test.bin`` in
    ``root``, uint16 token ids, memory-mapped (nothing is loaded until read).

    Without test.bin, val.bin is halved: its first half is val, its second test.
    The vocab is ``vocab`` when given (model.vocab), else ``vocab_size`` of
    meta.json (prepare-text) or of nanoGPT's meta.pkl, else the largest id + 1.
    Every file is read once to check its ids against the vocab; the fingerprint
    is meta.json's, else a sha256 of the splits' tokens (``token_fingerprint``)."""
    folder = _local_root(root)
    meta = {}
    if (folder / "meta.json").exists():
        meta = parse_meta(folder / "meta.json", (folder / "meta.json").read_bytes())
    files = {}
    for split in SPLITS:
        path = folder / f"{split}.bin"
        if split == "test" and not path.exists():
            continue
        if not path.is_file():
            raise ConfigError(str(path), "missing: data.root needs train.bin and val.bin")
        size = path.stat().st_size
        if size == 0:
            raise ConfigError(str(path), "empty")
        if size % 2:
            raise ConfigError(str(path), f"{size} bytes: not a whole number of uint16 tokens")
        files[split] = (path, np.memmap(path, dtype=np.uint16, mode="r"))
    top = {split: int(ids.max()) for split, (_, ids) in files.items()}
    source = "model.vocab"
    if vocab is None and "vocab_size" in meta:
        vocab, source = int(meta["vocab_size"]), "vocab_size of meta.json"
    elif vocab is None and (folder / "meta.pkl").exists():  # nanoGPT's char-level sets
        with open(folder / "meta.pkl", "rb") as f:
            vocab, source = int(pickle.load(f)["vocab_size"]), "vocab_size of meta.pkl"
    elif vocab is None:
        vocab = max(top.values()) + 1
    for split, (path, _) in files.items():
        if top[split] >= vocab:
            hint = "" if source == "model.vocab" else " (set model.vocab to override)"
            raise ConfigError(str(path), f"token id {top[split]} >= {source} {vocab}{hint}")
    splits = {split: ids for split, (_, ids) in files.items()}
    if "test" not in splits:
        val = splits["val"]
        splits["val"], splits["test"] = val[: len(val) // 2], val[len(val) // 2 :]
    fingerprint = meta.get("fingerprint") or token_fingerprint(splits)
    unit = "byte" if meta.get("unit") == "byte" else "token"
    return TextCorpus("tokens", **splits, vocab=vocab, fingerprint=fingerprint, unit=unit)


def token_fingerprint(splits: dict[str, np.ndarray]) -> str:
    """sha256 over each split's name and the sha256 of its uint16 ids, in order of
    SPLITS: what prepare-text writes to meta.json, whatever the format."""
    h = hashlib.sha256(b"tokens-v1")
    for split in SPLITS:
        if splits.get(split) is not None:  # hashed in place: memory maps are not loaded
            ids = np.ascontiguousarray(splits[split], dtype="<u2")
            h.update(split.encode() + b"=" + hashlib.sha256(ids).digest())
    return h.hexdigest()


def windows(tokens: np.ndarray, context: int, limit: int | None = None, split: str = "train"):
    """A TensorDataset of (x, y) windows, int64 (n, context) each, y = x shifted by
    one. With ``limit``, that many windows spread evenly over the split (the same
    ones on every call: evaluation subsets). x and y are views of one tensor."""
    import torch
    from torch.utils.data import TensorDataset

    n = (len(tokens) - 1) // context
    if n < 1:
        raise ConfigError(
            "model.context", f"{context} is longer than the {split} split ({len(tokens)} tokens)"
        )
    index = None if limit is None or limit >= n else np.arange(limit) * n // limit
    w = torch.from_numpy(window_array(tokens, context, index))
    return TensorDataset(w[:, :-1], w[:, 1:])


def window_array(tokens: np.ndarray, context: int, index: np.ndarray | None = None) -> np.ndarray:
    """The windows of ``tokens`` as one int64 (n, context + 1) array (those in
    ``index`` only, when given): only the windows taken are copied."""
    from numpy.lib.stride_tricks import sliding_window_view

    n = (len(tokens) - 1) // context
    if n < 1:
        return np.empty((0, context + 1), np.int64)
    w = sliding_window_view(tokens[: n * context + 1], context + 1)[::context]
    return np.array(w if index is None else w[index], dtype=np.int64)


def unigram_entropy(tokens: np.ndarray) -> float:
    """Entropy in nats of the tokens' frequencies: the loss of a model that
    predicts every token from its frequency alone, ignoring the context."""
    counts = np.bincount(np.asarray(tokens).ravel())
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _local_root(root: str | None) -> Path:
    if not root:
        raise ConfigError("data.root", "token files are read from data.root; set it")
    if "://" in root:
        raise ConfigError("data.root", f"{root}: .bin files are memory-mapped, give a folder")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise ConfigError("data.root", f"{root}: no such folder")
    if not any(folder.iterdir()):
        raise ConfigError("data.root", f"{root}: empty folder (run agd-ray data prepare-text)")
    return folder


def parse_meta(name, data: bytes) -> dict:
    try:
        meta = json.loads(data)
    except ValueError as err:
        raise ConfigError(str(name), f"not JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ConfigError(str(name), "not a JSON object")
    return meta
