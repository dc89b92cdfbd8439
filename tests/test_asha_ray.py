"""Early stopping through ``agd-ray sweep``, four learning rates of 8 epochs from
the best to hopeless.

ASHA: trials one at a time (so that every decision is the same on every run). Those
behind the best at the first rung stop there, their outcomes stored with what they
trained; AGD runs to the end; the best of grid is a completed run; the grid's
compute counts the stopped trials' epochs.

SHA (synchronous successive halving), trials at once: at each rung (epochs 2 and 6)
the grid waits for all its live trials, then keeps the best ceil(n / 3) by
validation loss: two go on from epoch 2, one from epoch 6. Whatever order the trials
arrive in, the decisions follow the losses alone, and at least one survivor of the
first rung was paused there and resumed from its checkpoint, its history whole."""

import json

import pyarrow.parquet as pq
import pytest

from agd_ray.cli import main
from agd_ray.sweep.summary import summary_from_trials

pytestmark = pytest.mark.ray

EPOCHS = 8
SETTINGS = [
    f"train.epochs={EPOCHS}",
    "data.num_samples=2000",
    "sweep.grid={model.depth: [2]}",
    "sweep.baselines=[{name: adam, lr: [0.003, 0.001, 0.00003, 0.00001]}]",
    "sweep.report=false",
    "wandb.mode=disabled",
]


def _sweep(tmp_path, capsys, *settings):
    """Run the sweep; (its output, trials.parquet, epochs.parquet) as DataFrames."""
    args = ["sweep", "experiments/quickstart.yaml", "--out", str(tmp_path)]
    for item in [*SETTINGS, *settings]:
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    trials = pq.read_table(tmp_path / "quickstart" / "trials.parquet").to_pandas()
    epochs = pq.read_table(tmp_path / "quickstart" / "epochs.parquet").to_pandas()
    return out.out, trials, epochs


def test_asha_stops_the_lagging_learning_rates(ray_session, tmp_path, capsys):
    out, trials, epochs = _sweep(
        tmp_path, capsys, "sweep.scheduler=asha", "sweep.max_concurrent_trials=1"
    )
    assert "stopped early (ASHA)" in out
    trained = epochs.groupby("trial_id")["epoch"].count()
    status = dict(zip(trials["optimizer.lr"].fillna(0), trials["status"], strict=True))
    # one at a time, best first: each later rate is behind 0.003 at the first rung
    assert status == {0: "completed", 0.003: "completed", 0.001: "stopped",
                      0.00003: "stopped", 0.00001: "stopped"}  # fmt: skip
    for _, t in trials.iterrows():
        n = trained[t["trial_id"]]
        if t["status"] == "stopped":  # at the first rung: a quarter of the epochs
            assert (
                n == EPOCHS // 4
                and t["samples"] == epochs.set_index("trial_id").loc[t["trial_id"], "samples"].max()
            )
        else:
            assert n == EPOCHS
    (entries,) = summary_from_trials(trials).values()
    agd, adam = entries
    assert agd.optimizer == "agd" and agd.runs == 1
    chosen = trials.set_index("trial_id").loc[adam.trial_id]
    assert chosen["status"] == "completed" and adam.stopped == 3 and adam.runs == 4
    assert adam.samples == trials.loc[trials["optimizer.name"] == "adam", "samples"].sum()


def test_sha_keeps_the_best_third_at_each_rung(ray_session, tmp_path, capsys):
    out, trials, epochs = _sweep(tmp_path, capsys, "sweep.scheduler=sha")
    assert "3 stopped early (SHA)" in out
    adam = trials[trials["optimizer.name"] == "adam"].set_index("trial_id")
    runs = {t: epochs[epochs["trial_id"] == t].sort_values("epoch") for t in adam.index}
    for t, rows in runs.items():  # each history whole: epochs 0..n-1 once, steps rising
        assert list(rows["epoch"]) == list(range(len(rows)))
        assert rows["step"].is_monotonic_increasing and rows["step"].is_unique
        assert adam.loc[t, "samples"] == rows["samples"].max()
    trained = {t: len(rows) for t, rows in runs.items()}
    assert sorted(trained.values()) == [2, 2, 6, EPOCHS]

    def val_loss(t, epoch):
        return runs[t].set_index("epoch").loc[epoch - 1, "val_loss"]

    # rung 2: the two worst by validation loss stop there; rung 6: the worse of the rest
    at_2 = sorted(adam.index, key=lambda t: val_loss(t, 2))
    assert {trained[t] for t in at_2[2:]} == {2}
    first, second = sorted(at_2[:2], key=lambda t: val_loss(t, 6))
    assert trained[first] == EPOCHS and trained[second] == 6
    assert adam.loc[first, "status"] == "completed"
    assert set(adam.loc[[second, *at_2[2:]], "status"]) == {"stopped"}
    assert (trials.loc[trials["optimizer.name"] == "agd", "status"] == "completed").all()

    # a survivor of rung 2 that arrived before the last one was paused there and
    # resumed: Tune restored it (its iterations restart, its training_iteration not)
    def restored(t):
        (results,) = tmp_path.glob(f"quickstart/**/{t}/result.json")
        rows = [json.loads(line) for line in results.read_text().splitlines()]
        return any(r["iterations_since_restore"] < r["training_iteration"] for r in rows)

    assert any(restored(t) for t in at_2[:2])

    (entries,) = summary_from_trials(trials).values()
    agd, best = entries
    assert agd.runs == 1 and best.trial_id == first and best.runs == 4 and best.stopped == 3
    assert best.samples == adam["samples"].sum()
