"""Sweep expansion, batch ramps and the summary table (no Ray)."""

from pathlib import Path

import pytest

from agd_ray.config import ConfigError, load_config
from agd_ray.sweep.grid import expand
from agd_ray.sweep.summary import format_summary, summarise
from agd_ray.train.loop import batch_size_at

GRID = [
    "sweep.grid.model.depth=[2, 4]",
    "sweep.grid.model.width=[32, 64, 128]",
    "sweep.seeds=[0, 1]",
    "sweep.baselines=[{name: adam, lr: [1.0e-3, 1.0e-2]},"
    " {name: sgd, lr: 0.1, momentum: [0.0, 0.9]}]",
]


def test_cartesian_product_of_grid_seeds_and_baseline_grids():
    specs = expand(load_config(None, GRID))
    # 2 depths x 3 widths x 2 seeds = 12 groups, each: 1 AGD + 2 Adam + 2 SGD
    assert len(specs) == 12 * 5
    assert len({s.trial_id for s in specs}) == len(specs)
    groups = {}
    for s in specs:
        groups.setdefault(s.group, []).append(s)
    assert len(groups) == 12
    for members in groups.values():
        assert sorted(m.optimizer for m in members) == ["adam", "adam", "agd", "sgd", "sgd"]
        depths = {m.config.model.depth for m in members}
        seeds = {m.config.train.seed for m in members}
        assert len(depths) == 1 and len(seeds) == 1
    adam_lrs = sorted({s.config.optimizer.lr for s in specs if s.optimizer == "adam"})
    assert adam_lrs == [1e-3, 1e-2]
    momenta = sorted({s.config.optimizer.momentum for s in specs if s.optimizer == "sgd"})
    assert momenta == [0.0, 0.9]
    first = specs[0]
    assert first.optimizer == "agd" and first.columns["model.depth"] == 2
    assert first.columns["optimizer.lr"] is None
    assert {"model.depth", "model.width", "optimizer.lr", "optimizer.momentum"} <= set(
        first.columns
    )


def test_trial_ids_are_stable():
    a = [s.trial_id for s in expand(load_config(None, GRID))]
    b = [s.trial_id for s in expand(load_config(None, GRID))]
    assert a == b


@pytest.mark.parametrize(
    "override,expected",
    [
        ("sweep.grid.model.widht=[1]", "sweep.grid.model.widht: not a config key (did you mean"),
        ("sweep.grid.model.depth=[0]", "sweep.grid.model.depth:"),
        ("sweep.grid.model.depth=[]", "sweep.grid.model.depth: empty list"),
        ("sweep.baselines=[{name: adam, lr: [-1]}]", "sweep.baselines[0].lr:"),
        ("sweep.baselines=[{name: adam, lrr: 1}]", "sweep.baselines[0].lrr: unknown optimizer key"),
        ("sweep.baselines=[{name: sgd}]", "sweep.baselines[0].lr: sgd needs a learning rate"),
        ("sweep.baselines=[{lr: 1}]", "sweep.baselines[0]: each baseline needs a name"),
    ],
)
def test_bad_sweeps_name_the_key(override, expected):
    with pytest.raises(ConfigError) as info:
        expand(load_config(None, [override]))
    assert str(info.value).startswith(expected), str(info.value)


def test_batch_ramp_switches_at_the_listed_epochs():
    cfg = load_config(None, ["train.batch_size=32", "train.batch_schedule=[[2, 64], [5, 256]]"])
    sizes = [batch_size_at(cfg.train, e) for e in range(7)]
    assert sizes == [32, 32, 64, 64, 64, 256, 256]
    with pytest.raises(ConfigError, match="strictly increasing"):
        load_config(None, ["train.batch_schedule=[[5, 64], [2, 128]]"])
    with pytest.raises(ConfigError, match="not divisible"):
        load_config(None, ["scaling.num_workers=2", "train.batch_schedule=[[0, 63]]"])


def _row(spec, acc, val_loss, samples, wall, status="completed"):
    return {
        "trial_id": spec.trial_id,
        "group": spec.group,
        "optimizer.name": spec.optimizer,
        "optimizer.lr": spec.config.optimizer.lr,
        "status": status,
        "val_loss": val_loss,
        "test_loss": 1 - acc,
        "test_acc": acc,
        "params": 100,
        "samples": samples,
        "wall_s": wall,
    }


def test_summary_sets_agd_against_the_best_of_each_grid():
    """The best of grid is chosen on validation loss and scored on test: at depth 4
    the best test accuracy (0.65, lr 1e-2) is not the validation-best run (lr 1e-3)."""
    adam = "sweep.baselines=[{name: adam, lr: [1.0e-3, 1.0e-2, 0.1]}]"
    specs = expand(load_config(None, [GRID[0], adam]))
    by_opt = {}
    for s in specs:
        by_opt.setdefault((s.group, s.optimizer), []).append(s)
    rows = []
    for (group, opt), members in by_opt.items():
        if opt == "agd":
            rows.append(_row(members[0], 0.70, 0.3, 1000, 1.0))
        else:
            depth2 = group.startswith("model.depth=2")
            accs = [0.5, 0.8, 0.1] if depth2 else [0.6, 0.65, 0.2]
            vals = [0.6, 0.4, None] if depth2 else [0.3, 0.5, None]
            for m, acc, val in zip(members, accs, vals, strict=True):
                status = "diverged" if acc in (0.1, 0.2) else "completed"
                rows.append(_row(m, acc, val, 1000, 2.0, status))
    rows.append({**rows[0], "trial_id": "unfinished", "status": "failed", "test_acc": None})
    table = summarise(rows)
    d2 = table["model.depth=2;seed=0"]
    assert [e.optimizer for e in d2] == ["agd", "adam"]
    assert d2[0].best_acc == 0.70 and d2[0].runs == 1 and d2[0].samples == 1000
    assert d2[1].best_acc == 0.8 and d2[1].best_setting == "lr=0.01"
    assert d2[1].selected_by == "val_loss" and d2[1].val_loss == 0.4
    assert d2[1].runs == 3 and d2[1].samples == 3000 and d2[1].wall_s == 6.0
    assert d2[1].compute == 6 * 100 * 3000 and d2[1].diverged == 1
    d4 = table["model.depth=4;seed=0"]
    assert d4[1].best_acc == 0.6 and d4[1].best_setting == "lr=0.001"  # not 0.65
    text = format_summary(table)
    assert "depth=2 seed=0" in text and "lr=0.01" in text and "(1 diverged)" in text
    assert "chosen by val_loss, scored on the test split" in text


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "experiments").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_experiment_validates_and_expands(path):
    cfg = load_config(path)
    trials = expand(cfg)
    assert trials and len({t.trial_id for t in trials}) == len(trials)
