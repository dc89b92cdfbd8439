"""A tiny GPT learns on pysrc through ``agd-ray train``, AGD untuned: its validation
loss ends well below the unigram entropy of the validation split (what a model
that learned only byte frequencies would score)."""

import math

import pyarrow.parquet as pq
import pytest

from agd_ray.cli import main
from agd_ray.data.text import load_pysrc, unigram_entropy
from agd_ray.results import read_provenance

pytestmark = pytest.mark.ray

TINY = [
    "model.depth=1",
    "model.width=64",
    "model.context=32",
    "data.num_samples=2048",
    "data.eval_sequences=128",
    "train.epochs=3",
    "train.batch_size=32",
    "wandb.mode=disabled",
]


def test_tiny_gpt_learns_pysrc_through_agd_ray_train(ray_session, tmp_path, capsys):
    args = ["train", "experiments/gpt_pysrc.yaml", "--out", str(tmp_path)]
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 0
    assert "Traceback" not in capsys.readouterr().err

    epochs = pq.read_table(tmp_path / "gpt_pysrc" / "epochs.parquet").to_pylist()
    trial = pq.read_table(tmp_path / "gpt_pysrc" / "trials.parquet").to_pylist()[0]
    corpus = load_pysrc()
    entropy = unigram_entropy(corpus.val)  # nats per byte
    assert trial["status"] == "completed"
    assert trial["val_loss"] < entropy - 0.4, (trial["val_loss"], entropy)
    assert [e["val_loss"] for e in epochs] == sorted(e["val_loss"] for e in epochs)[::-1]
    # tokens and bits: 3 epochs x 2048 sequences x 32 tokens; bits = nats / ln 2
    assert [e["tokens"] for e in epochs] == [2048 * 32 * k for k in (1, 2, 3)]
    assert all(e["tokens_per_s"] > 0 for e in epochs)
    assert trial["val_bits"] == pytest.approx(trial["val_loss"] / math.log(2))
    prov = read_provenance(tmp_path / "gpt_pysrc" / "trials.parquet")
    assert prov["data"] == {"pysrc": corpus.fingerprint}
