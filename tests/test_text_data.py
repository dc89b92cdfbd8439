"""Text corpora: pysrc deterministic, cached and split by file; windows; token .bin
files and Parquet shards from prepare-text (bytes and BPE) read back exactly; bad
input refused in one line."""

import json
import math
import pickle
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from agd_ray import cli
from agd_ray.config import ConfigError
from agd_ray.data import text, text_stream
from agd_ray.data.text import (
    SPLITS,
    load_pysrc,
    load_token_bins,
    split_of,
    token_fingerprint,
    unigram_entropy,
    windows,
)
from agd_ray.data.text_prepare import prepare_text


def make_stdlib(root, n=100):
    """A fake standard library: n modules whose contents name them, plus files the
    rule must skip (test suites, installed packages, caches, other suffixes)."""
    for i in range(n):
        path = root / f"pkg{i % 7}" / f"mod{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {path.relative_to(root).as_posix()}\n" + f"x = {i}\n" * (i % 5 + 1))
    for skipped in ("test/t.py", "pkg1/tests/t.py", "site-packages/p/m.py", "__pycache__/c.py"):
        (root / skipped).parent.mkdir(parents=True, exist_ok=True)
        (root / skipped).write_text("SKIPPED\n")
    (root / "pkg0" / "notes.txt").write_text("SKIPPED\n")
    return root


def make_texts(root, n=60):
    """n small text files of distinct, partly repetitive prose (a few KB in all)."""
    words = "the quick brown fox jumps over a lazy dog while gradients descend".split()
    rng = np.random.default_rng(0)
    for i in range(n):
        lines = [" ".join(rng.choice(words, 8)) for _ in range(4)]
        path = root / f"d{i % 3}" / f"doc{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"document {i}\n" + "\n".join(lines) + "\n")
    return root


def expected_splits(root) -> dict[str, bytes]:
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    out = {s: b"" for s in SPLITS}
    for rel in files:
        out[split_of(rel)] += (root / rel).read_bytes()
    return out


def test_pysrc_is_split_by_file_deterministic_and_cached(tmp_path, monkeypatch):
    stdlib = make_stdlib(tmp_path / "lib")
    a = load_pysrc(str(tmp_path / "cache"), stdlib=str(stdlib))
    assert (a.name, a.vocab, a.unit) == ("pysrc", 256, "byte")
    files = sorted(p.relative_to(stdlib).as_posix() for p in stdlib.rglob("mod*.py"))
    for split in SPLITS:
        got = getattr(a, split).tobytes()
        mine = [f for f in files if split_of(f) == split]
        assert mine, f"the fake stdlib leaves {split} empty"
        assert got == b"".join((stdlib / f).read_bytes() for f in mine)  # in sorted order
        for f in files:  # each file in exactly its own split
            assert (f"# {f}\n".encode() in got) == (f in mine)
        assert b"SKIPPED" not in got
    # from the cache: nothing is rebuilt, and the same arrays come back
    monkeypatch.setattr(text, "_build_pysrc", lambda *a: pytest.fail("rebuilt"))
    b = load_pysrc(str(tmp_path / "cache"), stdlib=str(stdlib))
    monkeypatch.undo()
    c = load_pysrc(str(tmp_path / "cache2"), stdlib=str(stdlib))  # a fresh build
    for other in (b, c):
        assert other.fingerprint == a.fingerprint
        for split in SPLITS:
            np.testing.assert_array_equal(getattr(other, split), getattr(a, split))
    # one changed file: rebuilt, with another fingerprint
    (stdlib / files[3]).write_text("x = 'changed'\n")
    d = load_pysrc(str(tmp_path / "cache"), stdlib=str(stdlib))
    assert d.fingerprint != a.fingerprint
    assert len(list((tmp_path / "cache").glob("pysrc-*.npz"))) == 2


def test_pysrc_of_this_python(tmp_path):
    first = load_pysrc(str(tmp_path))
    start = time.perf_counter()
    again = load_pysrc(str(tmp_path))
    assert time.perf_counter() - start < 2
    assert again.fingerprint == first.fingerprint and len(first.fingerprint) == 64
    assert all(len(getattr(first, s)) > 100_000 for s in SPLITS)
    np.testing.assert_array_equal(again.test, first.test)
    # text has structure: far below the 8 bits of uniform bytes
    assert 2.5 < unigram_entropy(first.val) < 0.7 * math.log(256)


def test_windows():
    tokens = np.arange(103, dtype=np.uint16)
    ds = windows(tokens, context=10)
    x, y = ds.tensors
    assert x.shape == y.shape == (10, 10) and x.dtype == y.dtype == __import__("torch").int64
    assert (y[:, :-1] == x[:, 1:]).all()
    assert x[:, 0].tolist() == list(range(0, 100, 10)) and y[-1, -1] == 100  # stride context
    subset = windows(tokens, context=10, limit=4, split="val")
    assert subset.tensors[0][:, 0].tolist() == [0, 20, 50, 70]  # spread, the same every time
    assert len(windows(tokens, context=10, limit=50)) == 10
    with pytest.raises(ConfigError) as err:
        windows(tokens[:11], context=11, split="val")
    assert str(err.value) == "model.context: 11 is longer than the val split (11 tokens)"


def test_unigram_entropy():
    assert unigram_entropy(np.array([3, 3, 3], np.uint16)) == 0
    assert unigram_entropy(np.array([0, 1, 2, 3] * 5, np.uint8)) == pytest.approx(math.log(4))


def test_bytes_bins_and_parquet_round_trip(tmp_path, capsys):
    src = make_texts(tmp_path / "src")
    meta = prepare_text(str(src), str(tmp_path / "bin"))
    assert "bytes/token" in capsys.readouterr().out
    corpus = load_token_bins(str(tmp_path / "bin"))
    assert (corpus.name, corpus.vocab, corpus.unit) == ("tokens", 256, "byte")
    assert isinstance(corpus.train, np.memmap) and corpus.train.dtype == np.uint16
    for split, data in expected_splits(src).items():
        assert getattr(corpus, split).astype(np.uint8).tobytes() == data
        assert meta["tokens"][split] == meta["bytes"][split] == len(data)
    splits = {s: getattr(corpus, s) for s in SPLITS}
    assert corpus.fingerprint == meta["fingerprint"] == token_fingerprint(splits)

    pq_meta = prepare_text(str(src), str(tmp_path / "pq"), format="parquet", chunk=64)
    assert pq_meta["fingerprint"] == meta["fingerprint"]  # the same tokens
    assert text_stream.has_parquet_shards(str(tmp_path / "pq"))
    assert not text_stream.has_parquet_shards(str(tmp_path / "bin"))
    assert not text_stream.has_parquet_shards(None)
    assert not text_stream.has_parquet_shards(str(tmp_path / "x"))
    assert text_stream.parquet_meta(str(tmp_path / "pq"))["tokens"] == meta["tokens"]
    for split in SPLITS:
        shards = sorted((tmp_path / "pq" / split).glob("*.parquet"))
        rows = [r for f in shards for r in pq.ParquetFile(f).read().column("ids").to_pylist()]
        assert max(map(len, rows)) <= 64
        np.testing.assert_array_equal(np.concatenate(rows), getattr(corpus, split))


def test_bpe_round_trip(tmp_path):
    from tokenizers import Tokenizer

    src = make_texts(tmp_path / "src")
    meta = prepare_text(str(src), str(tmp_path / "bpe"), tokenizer="bpe", vocab_size=300)
    corpus = load_token_bins(str(tmp_path / "bpe"))
    assert 256 < corpus.vocab == meta["vocab_size"] <= 300 and corpus.unit == "token"
    tok = Tokenizer.from_file(str(tmp_path / "bpe" / "tokenizer.json"))
    for split, data in expected_splits(src).items():
        ids = getattr(corpus, split)
        assert tok.decode(ids.tolist()) == data.decode()
        assert len(ids) < 0.8 * len(data)  # the merges compress
    again = prepare_text(str(src), str(tmp_path / "again"), tokenizer="bpe", vocab_size=300)
    assert again["fingerprint"] == meta["fingerprint"]  # training is deterministic


def test_single_file_is_cut_in_order(tmp_path):
    src = tmp_path / "one.txt"
    src.write_text("".join(f"line {i}\n" for i in range(1000)))
    prepare_text(str(src), str(tmp_path / "out"), val_fraction=0.1, test_fraction=0.2)
    c = load_token_bins(str(tmp_path / "out"))
    parts = [getattr(c, s).astype(np.uint8).tobytes() for s in SPLITS]
    assert b"".join(parts) == src.read_bytes()
    assert all(p.endswith(b"\n") for p in parts)
    assert [round(len(p) / src.stat().st_size, 2) for p in parts] == [0.7, 0.1, 0.2]


def write_bins(root, **splits):
    root.mkdir(exist_ok=True)
    for split, ids in splits.items():
        np.asarray(ids, np.uint16).tofile(root / f"{split}.bin")
    return root


def test_bins_vocab_and_val_halves(tmp_path):
    root = write_bins(tmp_path / "d", train=[1, 2, 7], val=[0, 1, 2, 3, 4])
    c = load_token_bins(str(root))
    assert c.vocab == 8 and c.unit == "token"  # the largest id + 1
    assert c.val.tolist() == [0, 1] and c.test.tolist() == [2, 3, 4]
    assert c.fingerprint == token_fingerprint({"train": c.train, "val": c.val, "test": c.test})
    assert load_token_bins(str(root), vocab=50).vocab == 50
    with open(root / "meta.pkl", "wb") as f:  # nanoGPT's character-level datasets
        pickle.dump({"vocab_size": 65, "itos": {}, "stoi": {}}, f)
    assert load_token_bins(str(root)).vocab == 65
    (root / "meta.json").write_text(json.dumps({"vocab_size": 20, "unit": "byte"}))
    c = load_token_bins(str(root))
    assert (c.vocab, c.unit) == (20, "byte")


def test_bad_bins_are_refused_in_one_line(tmp_path):
    def error(root, vocab=None):
        with pytest.raises(ConfigError) as err:
            load_token_bins(root, vocab)
        return str(err.value)

    assert error(None).startswith("data.root: ")
    assert error(str(tmp_path / "nope")) == f"data.root: {tmp_path / 'nope'}: no such folder"
    (tmp_path / "empty").mkdir()
    assert error(str(tmp_path / "empty")).startswith(f"data.root: {tmp_path / 'empty'}: empty")
    root = write_bins(tmp_path / "d", train=[1, 2, 300])
    assert error(str(root)) == f"{root / 'val.bin'}: missing: data.root needs train.bin and val.bin"
    write_bins(root, val=[1, 2])
    with open(root / "train.bin", "ab") as f:
        f.write(b"\0")
    assert error(str(root)) == f"{root / 'train.bin'}: 7 bytes: not a whole number of uint16 tokens"
    write_bins(root, train=[1, 2, 300])
    assert error(str(root), 256) == f"{root / 'train.bin'}: token id 300 >= model.vocab 256"
    (root / "meta.json").write_text(json.dumps({"vocab_size": 100}))
    assert error(str(root)) == (
        f"{root / 'train.bin'}: token id 300 >= vocab_size of meta.json 100 "
        "(set model.vocab to override)"
    )
    assert error(str(tmp_path)).startswith(f"{tmp_path / 'train.bin'}: missing")
    (tmp_path / "empty" / "meta.json").write_text("{")
    assert error(str(tmp_path / "empty")).startswith(
        f"{tmp_path / 'empty' / 'meta.json'}: not JSON"
    )
    (tmp_path / "empty" / "meta.json").unlink()
    with pytest.raises(ConfigError, match=r"^data.root: .*: no meta.json \(run agd-ray"):
        text_stream.parquet_meta(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match=r"meta.json: needs vocab_size \(int\) and tokens"):
        text_stream.parquet_meta(str(root))


def test_bad_prepare_input_is_refused(tmp_path, capsys):
    src = make_texts(tmp_path / "src")
    few = make_texts(tmp_path / "few", n=2)
    cases = [
        ((str(tmp_path / "none"), str(tmp_path / "o")), f"{tmp_path / 'none'}: no such file"),
        ((str(src), str(src / "out")), f"{src / 'out'}: is inside SRC"),
        ((str(src), str(src / "d0" / "doc0.txt")), f"{src / 'd0' / 'doc0.txt'}: is a file"),
        ((str(few), str(tmp_path / "o")), f"{few}: no file fell in the "),
    ]
    for args, start in cases:
        with pytest.raises(ConfigError) as err:
            prepare_text(*args)
        assert str(err.value).startswith(start) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="^--vocab-size: 70000: "):
        prepare_text(str(src), str(tmp_path / "o"), tokenizer="bpe", vocab_size=70000)
    assert not (tmp_path / "o").exists()  # refused before anything was written
    # the command: a summary line, or one error line and status 2
    args = ["--tokenizer", "bpe", "--vocab-size", "300", "--format", "parquet"]
    assert cli.main(["data", "prepare-text", str(src), str(tmp_path / "o"), *args]) == 0
    assert "tokens train" in capsys.readouterr().out
    meta = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert (meta["tokenizer"], meta["format"], meta["unit"]) == ("bpe", "parquet", "token")
    assert cli.main(["data", "prepare-text", str(tmp_path / "none"), str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'none'}: no such file or folder\n"
