"""ASHA through ``agd-ray sweep``: trials one at a time (so that every decision is
the same on every run), learning rates from the best to hopeless. Those behind the
best at the first rung stop there, their outcomes stored with what they trained; AGD runs to the
end; the best of grid is a completed run; the grid's compute counts the stopped
trials' epochs."""

import pyarrow.parquet as pq
import pytest

from agd_ray.cli import main
from agd_ray.sweep.summary import summary_from_trials

pytestmark = pytest.mark.ray

EPOCHS = 8
SETTINGS = [
    "sweep.scheduler=asha",
    "sweep.max_concurrent_trials=1",
    f"train.epochs={EPOCHS}",
    "data.num_samples=2000",
    "sweep.grid={model.depth: [2]}",
    "sweep.baselines=[{name: adam, lr: [0.003, 0.001, 0.00003, 0.00001]}]",
    "sweep.report=false",
    "wandb.mode=disabled",
]


def test_asha_stops_the_lagging_learning_rates(ray_session, tmp_path, capsys):
    args = ["sweep", "experiments/quickstart.yaml", "--out", str(tmp_path)]
    for item in SETTINGS:
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "stopped by ASHA" in out.out

    trials = pq.read_table(tmp_path / "quickstart" / "trials.parquet").to_pandas()
    epochs = pq.read_table(tmp_path / "quickstart" / "epochs.parquet").to_pandas()
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
