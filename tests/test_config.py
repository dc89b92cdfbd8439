"""Config: defaults, YAML, --set overrides, and one-line errors naming the key."""

from pathlib import Path

import pytest

from agd_ray.config import ConfigError, config_keys, load_config

ROOT = Path(__file__).resolve().parents[1]


def _err(overrides=(), path=None):
    with pytest.raises(ConfigError) as info:
        load_config(path, list(overrides))
    return str(info.value)


def test_quickstart_loads_with_the_papers_defaults():
    cfg = load_config(ROOT / "experiments/quickstart.yaml")
    assert (cfg.data.name, cfg.data.num_samples) == ("mnist1d", 10_000)
    assert (cfg.model.arch, cfg.model.depth, cfg.model.width) == ("fcn", 4, 256)
    assert (cfg.optimizer.name, cfg.optimizer.gain) == ("agd", 1.0)
    assert (cfg.train.batch_size, cfg.train.loss) == (128, "mse")


def test_set_overrides_parse_yaml_values():
    cfg = load_config(
        None,
        [
            "model.width=512",
            "optimizer.name=adam",
            "optimizer.lr=3e-4",
            "sweep.grid.model.depth=[2, 4]",
            "scaling.use_gpu=true",
        ],
    )
    assert cfg.model.width == 512
    assert cfg.optimizer.lr == pytest.approx(3e-4)
    assert cfg.sweep.grid == {"model.depth": [2, 4]}
    assert cfg.scaling.use_gpu is True


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["model.widht=3"], "model.widht: unknown key (did you mean 'width'?)"),
        (["modle.width=3"], "modle: unknown key (did you mean 'model'?)"),
        (["model.depth=0"], "model.depth:"),
        (["train.epochs=abc"], "train.epochs:"),
        (["optimizer.name=lion"], "optimizer.name: unknown value 'lion'"),
        (["optimizer.name=sgd"], "optimizer.lr: sgd needs a learning rate"),
        (["optimizer.lr=0.1"], "optimizer.lr: AGD has no learning rate"),
        (["optimizer.gain=-1"], "optimizer.gain:"),
        (["train.loss=hinge"], "train.loss: unknown value 'hinge'"),
        (
            ["train.batch_size=100", "scaling.num_workers=3"],
            "train.batch_size: 100 is not divisible",
        ),
        (["data.name=cifar10"], "data.root:"),
        (["model.arch=resnet18"], "model.arch: resnet18 needs image data"),
        (
            ["model.arch=vgg16", "data.name=cifar10", "data.root=/x", "model.depth=11"],
            "model.depth:",
        ),
        (["model.width"], "--set: expected key.path=value"),
        (["model.width=[1"], "model.width: --set value"),
    ],
)
def test_bad_values_name_the_key(overrides, expected):
    message = _err(overrides)
    assert message.startswith(expected), message
    assert "\n" not in message


def test_bad_files_name_the_file(tmp_path):
    assert _err(path=tmp_path / "nope.yaml").startswith(str(tmp_path / "nope.yaml") + ": no such")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {arch: fcn\n")
    assert "malformed YAML" in _err(path=bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    assert "expected a mapping" in _err(path=listy)


def test_config_keys_lists_dotted_leaves():
    keys = config_keys()
    assert {"model.width", "train.batch_size", "optimizer.gain", "name"} <= set(keys)
