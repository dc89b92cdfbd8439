"""Token shards of prepare-text streamed through Ray Data: every window of every
training shard arrives once, its y is its x shifted; val keeps eval_sequences
windows spread over its shards, the same ones in the same order each time."""

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_text_data import make_texts

from agd_ray.data.text import window_array
from agd_ray.data.text_prepare import prepare_text
from agd_ray.data.text_stream import build_token_datasets, parquet_meta

pytestmark = pytest.mark.ray

CONTEXT = 16


def shard_windows(folder) -> np.ndarray:
    """The windows expected from a split's shards: each shard windowed on its own."""
    parts = []
    for shard in sorted(folder.glob("*.parquet")):
        ids = np.concatenate(pq.ParquetFile(shard).read().column("ids").to_pylist())
        parts.append(window_array(ids.astype(np.uint16), CONTEXT))
    return np.concatenate(parts)


def collect(ds) -> np.ndarray:
    """(n, CONTEXT + 1) windows of a dataset, y checked against x on the way."""
    out = []
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        x, y = batch["x"], batch["y"]
        assert x.dtype == y.dtype == np.int64 and x.shape == y.shape and x.shape[1] == CONTEXT
        np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
        out.append(np.concatenate([x, y[:, -1:]], axis=1))
    return np.concatenate(out)


def rows(a: np.ndarray) -> list[tuple]:
    return sorted(map(tuple, a.tolist()))


def test_parquet_shards_stream_as_windows(ray_session, tmp_path):
    src = make_texts(tmp_path / "src", n=120)
    root = tmp_path / "pq"
    prepare_text(str(src), str(root), format="parquet", chunk=100, shard_tokens=4000)
    assert len(list((root / "train").glob("*.parquet"))) >= 3
    assert parquet_meta(str(root))["vocab_size"] == 256
    datasets = build_token_datasets(str(root), CONTEXT, eval_sequences=10, seed=0)
    assert set(datasets) == {"train", "val", "test"}

    train = collect(datasets["train"])
    assert rows(train) == rows(shard_windows(root / "train"))  # each once, none across shards

    val_all = shard_windows(root / "val")
    assert len(val_all) > 20
    val = collect(datasets["val"])
    assert len(val) == 10
    assert set(rows(val)) <= set(rows(val_all))
    assert val[-1].tolist() not in val_all[:10].tolist()  # spread, not the first ten
    np.testing.assert_array_equal(collect(datasets["val"]), val)  # the same, in order
