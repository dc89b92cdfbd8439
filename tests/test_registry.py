"""The optimizer registry: the config's names and messages come from it; Muon takes
the hidden matrices and AdamW the rest; schedule-free AdamW is evaluated at its
averaged point; each new optimizer trains through the loop (in-process, no Ray)."""

import pytest
import torch
from test_divergence import BASE, _session

from agd_ray.config import ConfigError, load_config
from agd_ray.data import DataSpec
from agd_ray.models import build_model
from agd_ray.optim import OPTIMIZERS, build_optimizer, build_scheduler
from agd_ray.optim.muon import hidden_matrices
from agd_ray.train import loop


def test_config_names_and_messages_come_from_the_registry():
    for name in OPTIMIZERS:
        lr = ["optimizer.lr=0.1"] if OPTIMIZERS[name].lr_required else []
        assert load_config(None, [f"optimizer.name={name}", *lr]).optimizer.name == name
    with pytest.raises(ConfigError) as err:
        load_config(None, ["optimizer.name=prodigi"])
    assert str(err.value).startswith("optimizer.name: unknown value 'prodigi'")
    assert "did you mean 'prodigy'" in str(err.value) and ", ".join(OPTIMIZERS) in str(err.value)
    with pytest.raises(ConfigError, match="schedule-free"):
        load_config(None, ["optimizer.name=schedulefree_adamw", "optimizer.schedule=cosine"])


def test_each_optimizer_gets_its_own_defaults():
    muon = load_config(None, ["optimizer.name=muon"]).optimizer
    assert (muon.lr, muon.momentum, muon.nesterov, muon.weight_decay) == (0.02, 0.95, True, 0.1)
    set_by_user = load_config(None, ["optimizer.name=muon", "optimizer.momentum=0.9"]).optimizer
    assert set_by_user.momentum == 0.9
    assert load_config(None, ["optimizer.name=prodigy"]).optimizer.lr == 1.0
    assert load_config(None, ["optimizer.name=adam"]).optimizer.lr == 1e-3


def _fcn(depth=4):
    cfg = load_config(None, [f"model.depth={depth}", "model.width=32", "model.bias=true"])
    return cfg, build_model(cfg.model, DataSpec("mnist1d", (40,), 10))


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    cfg, model = _fcn(depth=4)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [p is m.weight for p, m in zip(hidden_matrices(model), linears[1:-1], strict=True)]
    opt = build_optimizer(load_config(None, ["optimizer.name=muon"]).optimizer, model)
    muon, adamw = opt.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    assert in_muon == {id(m.weight) for m in linears[1:-1]}
    in_adamw = {id(p) for g in adamw.param_groups for p in g["params"]}
    rest = {id(p) for p in model.parameters()} - in_muon
    assert in_adamw == rest and {id(linears[0].weight), id(linears[-1].bias)} <= rest
    assert [g["lr"] for g in opt.param_groups] == [0.02, 3e-4]


def test_muon_steps_both_and_round_trips_with_its_schedule():
    cfg, model = _fcn()
    ocfg = load_config(None, ["optimizer.name=muon", "optimizer.schedule=cosine"]).optimizer
    opt = build_optimizer(ocfg, model)
    sched = build_scheduler(ocfg, opt, epochs=4)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(8, 40)).square().mean().backward()
    opt.step()
    sched.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert opt.param_groups[0]["lr"] < 0.02 and opt.param_groups[1]["lr"] < 3e-4  # both scaled
    state = opt.state_dict()
    again = build_optimizer(ocfg, model)
    again.load_state_dict(state)
    momentum = next(iter(again.optimizers[0].state.values()))["momentum_buffer"]
    assert torch.equal(momentum, next(iter(opt.optimizers[0].state.values()))["momentum_buffer"])


@pytest.mark.parametrize("name", ["muon", "prodigy", "schedulefree_adamw"])
def test_new_optimizers_learn_through_the_loop(name):
    cfg = load_config(None, [*BASE, f"optimizer.name={name}", "train.epochs=3"])
    out = loop.run_training(cfg, _session([]), loop.TrialInfo(name))
    losses = [row["val_loss"] for row in out["history"]]
    # square loss against sqrt(10) x one-hot: predicting zeros scores 1.0
    assert out["status"] == "completed" and losses[-1] < min(losses[0], 0.8)
    assert out["history"][-1]["test_acc"] > 0.35  # chance is 0.10


def test_schedulefree_is_evaluated_at_its_averaged_point(monkeypatch):
    """eval() before evaluation (and the checkpoint after it), train() before training."""
    modes = []
    evaluate = loop.evaluate

    def spy(cfg, parts, *args):
        modes.append(parts.optimizer.param_groups[0]["train_mode"])
        return evaluate(cfg, parts, *args)

    monkeypatch.setattr(loop, "evaluate", spy)
    cfg = load_config(None, [*BASE, "optimizer.name=schedulefree_adamw", "train.epochs=2"])
    loop.run_training(cfg, _session([]), loop.TrialInfo("sf"))
    assert modes == [False] * 4  # val and test, both epochs, in eval mode
