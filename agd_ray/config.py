"""Typed, validated experiment config, loaded from YAML.

    cfg = load_config("experiments/quickstart.yaml", ["model.width=512"])

``ExperimentConfig`` holds one section per concern (``agd_ray.config_sections``:
data, model, optimizer, train, scaling, wandb, sweep) and checks what spans them.
Here too: the strict YAML reader, ``--set key.path=value`` overrides, dotted keys,
and the translation of pydantic's errors: unknown keys and invalid values raise
ConfigError, whose message names the key (``model.widht: unknown key (did you mean
'width'?)``), before anything starts. Import the sections from here.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from agd_ray.config_sections import (
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    ScalingConfig,
    Section,
    TrainConfig,
    WandbConfig,
)
from agd_ray.config_sweep import SweepConfig
from agd_ray.storage import CONFIG_FILE, Storage, is_uri

__all__ = [
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "ModelConfig",
    "OptimizerConfig",
    "ScalingConfig",
    "Section",
    "SweepConfig",
    "TrainConfig",
    "WandbConfig",
    "config_keys",
    "dump_config",
    "get_dotted",
    "load_config",
    "parse_override",
    "read_yaml",
    "set_dotted",
    "split_key",
    "validate_config",
]


class ConfigError(ValueError):
    """A bad config or bad input; ``str(err)`` is ``"<key or file>: <what is wrong>"``."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}" if key else problem)


class ExperimentConfig(Section):
    name: str = Field(default="experiment", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    train: TrainConfig = TrainConfig()
    scaling: ScalingConfig = ScalingConfig()
    wandb: WandbConfig = WandbConfig()
    sweep: SweepConfig = SweepConfig()

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        workers = self.scaling.num_workers
        if self.train.batch_size % workers:
            raise ValueError(
                f"train.batch_size: {self.train.batch_size} is not divisible by "
                f"scaling.num_workers={workers}"
            )
        for _, batch in self.train.batch_schedule or ():
            if batch % workers:
                raise ValueError(
                    f"train.batch_schedule: batch size {batch} is not divisible by "
                    f"scaling.num_workers={workers}"
                )
        if (self.model.arch == "gpt") != self.data.is_text:
            if self.data.is_text:
                raise ValueError(
                    f"model.arch: {self.model.arch} is an image model; {self.data.name} is "
                    "text (use model.arch: gpt)"
                )
            raise ValueError(
                f"data.name: {self.data.name} is image data; model.arch gpt needs text "
                "(pysrc or tokens)"
            )
        if self.model.arch == "gpt":  # a language model: next-token cross-entropy
            if "loss" in self.train.model_fields_set and self.train.loss != "xent":
                raise ValueError("train.loss: gpt is trained with cross-entropy (xent)")
            object.__setattr__(self.train, "loss", "xent")
        self.sweep.check_scheduler(self.data, self.train, self.scaling)
        if self.model.arch != "fcn" and self.data.name == "mnist1d":
            raise ValueError(f"model.arch: {self.model.arch} needs image data; mnist1d is 1-D")
        if self.model.arch == "vgg16" and self.data.name == "mnist":
            raise ValueError("model.arch: vgg16's five max-pools need 32x32 inputs, mnist is 28x28")
        if self.data.name not in ("mnist1d", "pysrc") and self.data.root is None:
            raise ValueError(f"data.root: {self.data.name} is read from data.root; set it")
        return self


def load_config(path: str | Path | None, overrides: list[str] = ()) -> ExperimentConfig:
    """Read a YAML config (or start from the defaults if ``path`` is None), apply
    ``key.path=value`` overrides (values parsed as YAML) and validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml(path)
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    return validate_config(raw)


class _StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (PyYAML keeps the last,
    silently dropping the first)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def dump_config(cfg: ExperimentConfig) -> str:
    """The validated config as YAML, every key spelled out (what ``read_yaml`` reads)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML config file, or the ``config.yaml`` that a sweep keeps in its home (a
    results folder or a storage URI such as ``s3://bucket/study/NAME``)."""
    if is_uri(path) or Path(path).is_dir():
        return _read_home_config(str(path))
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "no such file" if not path.exists() else "not a file")
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(str(path), f"cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "cannot read: not a UTF-8 text file") from None
    return _parse_yaml(text, str(path))


def _read_home_config(home: str) -> dict[str, Any]:
    try:
        data = Storage(home).read_bytes(CONFIG_FILE)
    except (OSError, ValueError) as err:  # unknown scheme, no credentials, no bucket
        raise ConfigError(home, f"cannot read: {err}") from None
    if data is None:
        raise ConfigError(home, f"no {CONFIG_FILE} here (is it a sweep's results folder?)")
    return _parse_yaml(data.decode(), f"{home}/{CONFIG_FILE}")


def _parse_yaml(text: str, path: str) -> dict[str, Any]:
    try:
        raw = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or err
        raise ConfigError(str(path), f"malformed YAML: {where}{problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(str(path), f"expected a mapping of sections, got {type(raw).__name__}")
    return raw


def parse_override(item: str) -> tuple[str, Any]:
    """``"model.width=512"`` -> ``("model.width", 512)``; the value is parsed as YAML."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError("--set", f"expected key.path=value, got {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(key, f"--set value {text!r} is not valid YAML") from err
    return key, value


# Fields whose values are mappings keyed by dotted config keys (the rest of a
# dotted path after them is one key, e.g. sweep.grid.model.depth).
_DOTTED_MAPPINGS = {("sweep", "grid")}


def split_key(key: str) -> list[str]:
    parts = key.split(".")
    for i in range(len(parts)):
        if tuple(parts[:i]) in _DOTTED_MAPPINGS:
            return parts[:i] + [".".join(parts[i:])]
    return parts


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = split_key(key)
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), "is a value, not a section")
        node = child
    node[parts[-1]] = value


def get_dotted(cfg: ExperimentConfig, key: str) -> Any:
    """The value at a dotted key (``model.width``, ``sweep.grid.model.depth``)."""
    node: Any = cfg
    for part in split_key(key):
        node = node[part]  # a section, or a mapping such as sweep.grid
    return node


def config_keys() -> list[str]:
    """Every settable leaf key, dotted (``model.width``, ``train.batch_size``...)."""
    keys = []
    for section, field in ExperimentConfig.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += [f"{section}.{name}" for name in ann.model_fields]
        else:
            keys.append(section)
    return keys


def validate_config(raw: dict[str, Any]) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise _to_config_error(err) from None


def _to_config_error(err: ValidationError) -> ConfigError:
    e = err.errors()[0]
    loc = [str(p) for p in e["loc"]]
    key = ".".join(loc)
    if e["type"] == "extra_forbidden":
        valid = _fields_at(loc[:-1])
        near = difflib.get_close_matches(loc[-1], valid, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else f" (valid: {', '.join(valid)})"
        return ConfigError(key, f"unknown key{hint}")
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "literal_error":
        names = re.findall(r"'([^']*)'", e["ctx"]["expected"])
        near = difflib.get_close_matches(str(e.get("input")), names, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        valid = ", ".join(names)
        return ConfigError(key, f"unknown value {e.get('input')!r} ({hint}valid: {valid})")
    if e["type"] == "list_type":
        return ConfigError(key, f"expected a list, got {e.get('input')!r}")
    if e["type"] in ("model_type", "dict_type"):
        return ConfigError(key, f"expected a section of key: value pairs, got {e.get('input')!r}")
    if e["type"] == "string_pattern_mismatch" and key == "name":
        return ConfigError(
            key, f"{e.get('input')!r}: use letters, digits, '_', '.' and '-' (it names a folder)"
        )
    if e["type"] == "value_error" and ": " in msg:
        # our own validators write "field: problem" (or "section.field: problem")
        sub, problem = msg.split(": ", 1)
        full = sub if "." in sub else ".".join(loc + [sub])
        return ConfigError(full, problem)
    return ConfigError(key or "config", f"{msg} (got {e.get('input')!r})")


def _fields_at(loc: list[str]) -> list[str]:
    model: type[BaseModel] = ExperimentConfig
    for part in loc:
        field = model.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type)):
            return []
        model = field.annotation
    return list(model.model_fields)
