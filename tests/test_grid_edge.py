"""A baseline's best of grid at its grid's edge is flagged in the headline: its
optimum may lie outside the grid, so the comparison with AGD may flatter AGD."""

import pandas as pd

from agd_ray.analysis.compare import best_of_grid
from agd_ray.analysis.grid_edge import edge_counts, edge_text, grid_edges

KEYS = ("lr", "lam", "schedule")


def trial(group, optimizer, val_loss, status="completed", **optimizer_keys):
    extra = {f"optimizer.{k}": v for k, v in optimizer_keys.items() if k not in KEYS}
    return {
        **extra,
        "trial_id": f"{group}-{optimizer}-{sorted(optimizer_keys.items())}",
        "status": status,
        "group": group,
        "optimizer.name": optimizer,
        "optimizer.lr": optimizer_keys.get("lr"),
        "optimizer.lam": optimizer_keys.get("lam"),
        "optimizer.schedule": optimizer_keys.get("schedule"),
        "val_loss": val_loss,
        "test_loss": val_loss,
        "test_acc": 1 - val_loss,
        "samples": 1000,
        "wall_s": 1.0,
        "params": 10,
    }


def test_a_choice_at_the_lowest_or_highest_value_is_an_edge_and_one_inside_is_not():
    rows = []
    for g, best_lr in (("d2;seed=0", 1e-1), ("d4;seed=0", 1e-2), ("d8;seed=0", 1e-3)):
        rows.append(trial(g, "agd", 0.5))
        for lr in (1e-3, 1e-2, 1e-1):  # a schedule that does not vary is no tuned key
            rows.append(trial(g, "adam", 0.3 if lr == best_lr else 0.4, lr=lr, schedule="cos"))
        for lam in (0.25, 0.5, 1.0):
            rows.append(trial(g, "curvature", 0.3 if lam == 0.25 else 0.35, lam=lam))
    rows.append(trial("d8;seed=0", "adam", float("nan"), status="diverged", lr=1.0))
    trials = pd.DataFrame(rows)
    trials["compute"] = 1.0
    best = best_of_grid(trials)
    best["grid_edge"] = grid_edges(trials, best)
    edge = best.set_index(["group", "optimizer.name"])["grid_edge"]
    assert edge[("d2;seed=0", "adam")] == "lr=highest"
    assert edge[("d4;seed=0", "adam")] == ""  # inside its grid
    # lowest of the runs, one of which diverged above: still the grid's lowest value
    assert edge[("d8;seed=0", "adam")] == "lr=lowest"
    assert edge[("d2;seed=0", "curvature")] == "lam=lowest"
    assert edge[("d2;seed=0", "agd")] == ""  # no grid
    adam = best[best["optimizer.name"] == "adam"]
    assert edge_counts(adam) == {"settings": 2, "lr=highest": 1, "lr=lowest": 1}
    assert edge_text(edge_counts(adam), 3) == (
        "; chosen at its grid's edge in 2 of 3 settings (lr highest in 1, lr lowest in 1): "
        "the grid may not hold the baseline's best"
    )
    assert edge_text({}, 3) == ""


def test_a_diverged_run_above_the_choice_shows_the_grid_looked_higher():
    rows = [trial("d2;seed=0", "adam", 0.3, lr=1e-2), trial("d2;seed=0", "adam", 0.4, lr=1e-3)]
    rows.append(trial("d2;seed=0", "adam", float("nan"), status="diverged", lr=1e-1))
    trials = pd.DataFrame(rows)
    trials["compute"] = 1.0
    best = best_of_grid(trials)
    assert list(grid_edges(trials, best)) == [""]


def test_a_learning_rate_shift_read_off_a_grid_edge_is_flagged_as_a_bound():
    from agd_ray.analysis.compare import lr_transfer

    rows = []
    for width, best_lr in ((64, 1e-1), (256, 1e-2), (1024, 1e-3)):
        group = f"model.width={width};seed=0"
        for lr in (1e-3, 1e-2, 1e-1):
            row = trial(group, "adam", 0.3 if lr == best_lr else 0.4, lr=lr)
            rows.append({**row, "model.width": width})
    # width 1024 also tried lr 1e-4, which diverged: its 1e-3 is not at the edge
    rows.append({**trial("model.width=1024;seed=0", "adam", 9.0, "diverged", lr=1e-4)})
    rows[-1]["model.width"] = 1024
    (entry,) = lr_transfer(pd.DataFrame(rows), "adam")
    assert entry["best_lr_per_width"] == {"64": 1e-1, "256": 1e-2, "1024": 1e-3}
    assert entry["best_at_grid_edge"] == ["64"]


def edges_of(rows) -> dict:
    trials = pd.DataFrame(rows)
    trials["compute"] = 1.0
    best = best_of_grid(trials)
    best["grid_edge"] = grid_edges(trials, best)
    return best.set_index(["group", "optimizer.name"])["grid_edge"].to_dict()


def test_a_run_that_failed_or_never_ended_was_not_tried():
    g = "d2;seed=0"
    rows = [trial(g, "adam", 0.4, lr=1e-3), trial(g, "adam", 0.3, lr=1e-2)]
    rows.append(trial(g, "adam", float("nan"), status="failed", lr=1e-1))
    rows.append(trial(g, "adam", float("nan"), status="unfinished", lr=1.0))
    assert edges_of(rows) == {(g, "adam"): "lr=highest"}


def test_each_entry_of_one_optimizer_is_its_own_grid_and_switches_are_not_tuned():
    g = "d2;seed=0"
    rows = [  # sgd with momentum over two lrs; sgd without over one: two grids
        trial(g, "sgd", 0.3, lr=0.01, momentum=0.9),
        trial(g, "sgd", 0.35, lr=0.1, momentum=0.9),
        trial(g, "sgd", 0.5, lr=0.001, momentum=0.0),
    ]
    assert edges_of(rows) == {(g, "sgd"): "lr=lowest"}  # not momentum, a fixed setting
    rows = [
        trial(g, "sgd", 0.3, lr=0.1, nesterov=True),
        trial(g, "sgd", 0.4, lr=0.1, nesterov=False),
    ]
    assert edges_of(rows) == {(g, "sgd"): ""}  # a switch has no edge


def test_a_product_grid_has_an_edge_per_axis():
    g = "d2;seed=0"
    rows = [
        trial(g, "adamw", 0.3 if (lr, wd) == (1e-2, 0.1) else 0.4, lr=lr, weight_decay=wd)
        for lr in (1e-3, 1e-2, 1e-1)
        for wd in (0.0, 0.01, 0.1)
    ]
    assert edges_of(rows) == {(g, "adamw"): "weight_decay=highest"}
