"""``agd-ray data prepare-text SRC DST``: text -> token ids for GPT models.

    agd-ray data prepare-text corpus/ data/corpus --tokenizer bpe --vocab-size 4096
    corpus = load_token_bins("data/corpus")   # agd_ray.data.text; or, with --format
    datasets = build_token_datasets(...)      # parquet, streamed by Ray Data

SRC is a text file or a folder (every regular file in it, recursively, sorted by
relative path). A folder is split by file: ``split_of`` a hash of each relative path
(a file never straddles two splits, and adding one moves no other). A single file
is cut into contiguous parts instead, train first, each cut moved to the next line
end. Within a split the files follow each other with nothing between them.

Tokenizers: ``bytes`` (the raw bytes, vocab 256) or ``bpe``: a byte-level BPE trained
here with ``tokenizers`` on the train split only (no download), saved as
DST/tokenizer.json; its vocab may come out below --vocab-size on a small corpus.

Formats: ``bin`` writes nanoGPT's DST/{train,val,test}.bin (uint16 ids); ``parquet``
writes DST/{train,val,test}/shard-NNNNN.parquet, column ``ids`` (list<uint16>, one
row per ``chunk`` tokens of a file, about ``shard_tokens`` tokens, 2 MB, a shard).
Both write DST/meta.json: vocab_size, tokenizer, unit ("byte" for bytes, else
"token"), tokens and bytes per split (bits per byte = nats per token / ln 2 x
tokens / bytes), fingerprint (``agd_ray.data.text.token_fingerprint``: the same for
both formats) and format. Files are encoded one at a time and written as they go
(a single SRC file is read whole); a re-run replaces what an earlier one wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from agd_ray.config import ConfigError
from agd_ray.data.text import SPLITS, split_of

SHARD_TOKENS = 1 << 20
PIECE_BYTES = 1 << 20  # BPE encodes a file in pieces of about this size, cut at line ends


def prepare_text(
    src: str,
    dst: str,
    tokenizer: str = "bytes",
    vocab_size: int = 4096,
    format: str = "bin",
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    chunk: int = 2048,
    shard_tokens: int = SHARD_TOKENS,
) -> dict:
    """Tokenize SRC into DST (see the module doc); returns what meta.json holds."""
    _check_args(tokenizer, vocab_size, format, val_fraction, test_fraction, chunk)
    docs = list_documents(src, val_fraction, test_fraction)
    out = Path(dst)
    if out.exists() and not out.is_dir():
        raise ConfigError(dst, "is a file, not a folder")
    if Path(src).is_dir() and out.resolve().is_relative_to(Path(src).resolve()):
        raise ConfigError(dst, f"is inside SRC {src}: its outputs would be read as text")
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    if tokenizer == "bytes":
        encode, vocab = _encode_bytes, 256
    else:
        encode, vocab = _train_bpe(vocab_size, docs["train"], out)
    tokens, nbytes, digests = {}, {}, {}
    for split in SPLITS:
        writer = BinWriter(out, split) if format == "bin" else ShardWriter(out, split, shard_tokens)
        digest, tokens[split], nbytes[split] = hashlib.sha256(), 0, 0
        for doc in docs[split]:
            data = doc.read_bytes() if isinstance(doc, Path) else doc
            ids = encode(data).astype("<u2")
            digest.update(ids.tobytes())
            writer.add(ids, chunk)
            tokens[split] += len(ids)
            nbytes[split] += len(data)
        writer.close()
        digests[split] = digest.digest()
    fingerprint = hashlib.sha256(b"tokens-v1")
    for split in SPLITS:  # as token_fingerprint computes it from the arrays
        fingerprint.update(split.encode() + b"=" + digests[split])
    meta = {
        "vocab_size": vocab,
        "tokenizer": tokenizer,
        "unit": "byte" if tokenizer == "bytes" else "token",
        "tokens": tokens,
        "bytes": nbytes,
        "fingerprint": fingerprint.hexdigest(),
        "format": format,
    }
    _write_atomic(out / "meta.json", json.dumps(meta, indent=1).encode())
    per_token = sum(nbytes.values()) / max(1, sum(tokens.values()))
    counts = " / ".join(f"{s} {tokens[s]:,}" for s in SPLITS)
    print(f"{dst}: tokens {counts}; vocab {vocab} ({tokenizer}), {per_token:.2f} bytes/token")
    return meta


def _check_args(tokenizer, vocab_size, format, val_fraction, test_fraction, chunk) -> None:
    if tokenizer not in ("bytes", "bpe"):
        raise ConfigError("--tokenizer", f"{tokenizer!r}: one of bytes, bpe")
    if format not in ("bin", "parquet"):
        raise ConfigError("--format", f"{format!r}: one of bin, parquet")
    if tokenizer == "bpe" and not 256 < vocab_size <= 65536:
        raise ConfigError(
            "--vocab-size",
            f"{vocab_size}: a byte-level BPE needs more than 256 (its bytes) "
            "and at most 65536 (ids are stored as uint16)",
        )
    if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
        raise ConfigError(
            "val_fraction, test_fraction",
            f"{val_fraction}, {test_fraction}: both above 0, their sum below 1",
        )
    if chunk < 1:
        raise ConfigError("chunk", f"{chunk}: tokens per Parquet row, at least 1")


def list_documents(src: str, val_fraction: float, test_fraction: float) -> dict[str, list]:
    """{split: [file Path, or the bytes of a part of a single file]}, in order."""
    root = Path(src)
    if root.is_file():
        data = root.read_bytes()
        cuts = [0, _line_end(data, (1 - val_fraction - test_fraction) * len(data))]
        cuts += [_line_end(data, (1 - test_fraction) * len(data)), len(data)]
        docs = {s: [data[a:b]] for s, a, b in zip(SPLITS, cuts[:-1], cuts[1:], strict=True)}
        for split, (part,) in docs.items():
            if not part:
                raise ConfigError(
                    src, f"{len(data)} bytes leave the {split} split empty: too small a text"
                )
        return docs
    if not root.is_dir():
        raise ConfigError(src, "no such file or folder")
    files = []
    for folder, _, names in os.walk(root):
        rel = Path(folder).relative_to(root)
        files += [(rel / n).as_posix() for n in names if Path(folder, n).is_file()]
    files.sort()
    docs = {s: [] for s in SPLITS}
    for rel in files:
        docs[split_of(rel, val_fraction, test_fraction)].append(root / rel)
    for split, paths in docs.items():
        if not paths:
            raise ConfigError(
                src,
                f"no file fell in the {split} split ({len(files)} files, split by a hash "
                "of their paths): give more files, or one file (split by position)",
            )
    return docs


def _line_end(data: bytes, position: float) -> int:
    """The first line end at or after ``position`` (just past its newline)."""
    end = data.find(b"\n", int(position))
    return len(data) if end < 0 else end + 1


def _encode_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, np.uint8).astype(np.uint16)


def _pieces(data: bytes):
    """Texts of about PIECE_BYTES each, cut after a newline (never inside a character)."""
    start = 0
    while start < len(data):
        end = _line_end(data, start + PIECE_BYTES - 1)
        yield data[start:end].decode("utf-8", "replace")
        start = end


def _train_bpe(vocab_size: int, train_docs: list, out: Path):
    """A byte-level BPE (GPT-2's pre-tokenizer) trained on the train split; saved
    to DST/tokenizer.json. Returns (encode, vocab)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def texts():
        for doc in train_docs:
            yield from _pieces(doc.read_bytes() if isinstance(doc, Path) else doc)

    tok.train_from_iterator(texts(), trainer)
    tok.save(str(out / "tokenizer.json"))

    def encode(data: bytes) -> np.ndarray:
        ids = [np.array(e.ids, np.uint16) for e in tok.encode_batch(list(_pieces(data)))]
        return np.concatenate(ids) if ids else np.empty(0, np.uint16)

    return encode, tok.get_vocab_size()


class BinWriter:
    """Appends a split's ids to DST/<split>.bin (in place once closed)."""

    def __init__(self, out: Path, split: str):
        self.path = out / f"{split}.bin"
        self.tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        self.file = open(self.tmp, "wb")

    def add(self, ids: np.ndarray, chunk: int) -> None:
        self.file.write(ids.tobytes())

    def close(self) -> None:
        self.file.close()
        os.replace(self.tmp, self.path)


class ShardWriter:
    """Rows of ``chunk`` ids of one file each, gathered into shards of about
    ``shard_tokens`` ids: DST/<split>/shard-NNNNN.parquet."""

    def __init__(self, out: Path, split: str, shard_tokens: int):
        self.folder, self.shard_tokens = out / split, shard_tokens
        self.folder.mkdir(exist_ok=True)
        self.rows: list[np.ndarray] = []
        self.count = self.index = 0

    def add(self, ids: np.ndarray, chunk: int) -> None:
        for start in range(0, len(ids), chunk):
            self.rows.append(ids[start : start + chunk])
            self.count += len(self.rows[-1])
            if self.count >= self.shard_tokens:
                self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.rows:
            return
        offsets = np.cumsum([0] + [len(r) for r in self.rows], dtype=np.int32)
        values = np.concatenate(self.rows).astype(np.uint16)
        # from buffers: pa.array() of a numpy array imports pandas (seconds)
        ids = pa.ListArray.from_buffers(
            pa.list_(pa.uint16()),
            len(self.rows),
            [None, pa.py_buffer(offsets)],
            children=[
                pa.Array.from_buffers(pa.uint16(), len(values), [None, pa.py_buffer(values)])
            ],
        )
        path = self.folder / f"shard-{self.index:05d}.parquet"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        pq.write_table(pa.Table.from_arrays([ids], names=["ids"]), tmp)
        os.replace(tmp, path)
        self.rows, self.count, self.index = [], 0, self.index + 1

    def close(self) -> None:
        self.flush()


def _clear(out: Path) -> None:
    """Remove what an earlier prepare-text wrote here (and only that)."""
    for name in ("train.bin", "val.bin", "test.bin", "meta.json", "tokenizer.json"):
        (out / name).unlink(missing_ok=True)
    for split in SPLITS:
        for shard in (out / split).glob("shard-*.parquet"):
            shard.unlink()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
