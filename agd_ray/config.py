"""Typed, validated experiment config: one pydantic model per concern, loaded from YAML.

    cfg = load_config("experiments/quickstart.yaml", ["model.width=512"])

Unknown keys and invalid values raise ConfigError, whose message names the key
(``model.widht: unknown key (did you mean 'width'?)``), before anything starts.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)


class ConfigError(ValueError):
    """A bad config or bad input; ``str(err)`` is ``"<key or file>: <what is wrong>"``."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}" if key else problem)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Section):
    name: Literal["mnist1d", "mnist", "cifar10", "cifar100", "imagenet"] = "mnist1d"
    num_samples: PositiveInt = 10_000
    """mnist1d: samples generated (80 % train, 20 % test)."""
    root: str | None = None
    """Folder holding mnist/cifar10/cifar100 in torchvision's layout."""
    download: bool = False
    """Let torchvision download into ``root`` (needs network access)."""
    cache_dir: str | None = None
    """Where generated mnist1d is cached (default ~/.cache/agd-ray)."""
    loader_workers: int = Field(default=2, ge=0)
    """DataLoader worker processes per Train worker for image datasets."""
    image_size: PositiveInt = 224
    """imagenet: side of the training crops and validation centre crops."""
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Share of the training data held out as a validation split, drawn from
    ``train.seed`` (imagenet: that share of the training shards). Baselines' best of
    grid is chosen on it; test metrics are what is reported. 0: no validation split."""


class ModelConfig(Section):
    arch: Literal["fcn", "vgg16", "resnet18", "resnet50"] = "fcn"
    depth: PositiveInt | None = None
    """fcn: number of weight layers (default 4). Fixed by the arch for vgg16/resnet*."""
    width: PositiveInt | None = None
    """fcn: hidden units (default 256); conv archs: base channel count (default 64)."""
    bias: bool = False
    """Linear/conv biases and BatchNorm affine parameters (the paper has none)."""

    @model_validator(mode="after")
    def _arch_defaults(self) -> ModelConfig:
        fixed_depth = {"vgg16": 16, "resnet18": 18, "resnet50": 50}.get(self.arch)
        if fixed_depth is not None and self.depth not in (None, fixed_depth):
            raise ValueError(f"depth: {self.arch} has depth {fixed_depth}; leave depth unset")
        object.__setattr__(self, "depth", self.depth or fixed_depth or 4)
        object.__setattr__(self, "width", self.width or (256 if self.arch == "fcn" else 64))
        return self


class OptimizerConfig(Section):
    name: str = "agd"
    """One of the registry's optimizers (``agd_ray.optim.OPTIMIZERS``): agd (the
    paper's), agd_spectral, curvature, sgd, adam, adamw, amsgrad, muon, prodigy,
    schedulefree_adamw."""
    gain: PositiveFloat = 1.0
    """AGD: multiplies every update (the paper: 1)."""
    ns_steps: PositiveInt = 10
    """agd_spectral: Newton-Schulz iterations per update."""
    direction: Literal["sgd", "adam"] = "sgd"
    """curvature: the base direction (sgd uses momentum; adam uses betas and eps)."""
    lam: PositiveFloat = 0.5
    """curvature: step factor; on a quadratic 1/2 is the exact line minimiser along
    the direction and 1 the largest step that does not increase the loss."""
    beta3: float = Field(default=0.9, ge=0.0, lt=1.0)
    """curvature: moving-average factor of the curvature estimate."""
    lr: PositiveFloat | None = None
    """The learning rate of optimizers that have one (default per optimizer: adam
    1e-3, muon 0.02, prodigy 1.0 (a multiplier of its estimate), schedulefree_adamw
    2.5e-3; sgd needs one)."""
    adamw_lr: PositiveFloat = 3e-4
    """muon: AdamW's learning rate for the parameters Muon does not take (the first
    and last layers, biases, gains, conv kernels)."""
    warmup_steps: NonNegativeInt = 0
    """schedulefree_adamw: linear warm-up steps."""
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(default=0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    schedule: Literal["constant", "cosine", "step", "warm_restarts"] = "constant"
    """Baselines' learning-rate schedule, stepped once per epoch (torch's classes):
    cosine over the run, step (x gamma every step_size epochs), warm_restarts (SGDR)."""
    step_size: PositiveInt = 30
    gamma: float = Field(default=0.1, gt=0.0, le=1.0)
    restart_period: PositiveInt = 10
    """warm_restarts: epochs until the first restart (T_0)."""
    restart_mult: PositiveInt = 2
    """warm_restarts: factor growing each period (T_mult)."""

    @model_validator(mode="after")
    def _check(self) -> OptimizerConfig:
        from agd_ray.optim.registry import OPTIMIZERS, learning_rate_free

        entry = OPTIMIZERS.get(self.name)
        if entry is None:
            near = difflib.get_close_matches(self.name, OPTIMIZERS, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ValueError(
                f"name: unknown value {self.name!r} ({hint}valid: {', '.join(OPTIMIZERS)})"
            )
        for key, value in entry.defaults:  # this optimizer's own defaults
            if key not in self.model_fields_set:
                object.__setattr__(self, key, value)
        what = {"agd": "AGD", "agd_spectral": "spectral AGD"}.get(self.name, self.name)
        if not entry.schedule and self.schedule != "constant":
            hint = "it is schedule-free" if entry.lr else "use train.batch_schedule"
            raise ValueError(f"schedule: {what} has no schedule ({hint})")
        if learning_rate_free(self.name):  # AGD, its variants, curvature
            if self.lr is not None:
                scale_with = "lam" if self.name == "curvature" else "gain"
                raise ValueError(
                    f"lr: {what} has no learning rate (use {scale_with} to scale its steps)"
                )
            return self
        if self.lr is None:
            if entry.lr_required:
                raise ValueError(f"lr: {self.name} needs a learning rate")
            object.__setattr__(self, "lr", entry.lr)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: Nesterov momentum needs momentum > 0")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError("betas: each beta must be in [0, 1)")
        return self


class TrainConfig(Section):
    epochs: PositiveInt = 20
    batch_size: PositiveInt = 128
    """Global batch, split evenly over the Train workers."""
    loss: Literal["mse", "xent"] = "mse"
    """mse: square loss against one-hot targets * sqrt(num_classes); xent: cross-entropy."""
    seed: int = 0
    eval_batch_size: PositiveInt = 1024
    checkpoint_every: PositiveInt = 1
    """Epochs between checkpoints (the last epoch is always checkpointed)."""
    checkpoint_min_s: float = Field(default=2.0, ge=0.0)
    """Skip a due checkpoint if the previous one is younger than this (seconds):
    tiny epochs then do not pay a checkpoint each. 0 checkpoints every due epoch."""
    noise_scale: bool = True
    """Estimate the gradient noise scale B_simple (McCandlish et al. 2018): free under
    data parallelism; with one worker it takes two micro-batches per step (skipped
    for models with BatchNorm, whose statistics would change)."""
    noise_scale_every: PositiveInt = 10
    """With one worker, measure on every n-th step only (the micro-batches cost a
    second, smaller backward pass)."""
    batch_schedule: list[tuple[NonNegativeInt, PositiveInt]] | None = None
    """Batch-size ramp (Smith et al. 2017): [[epoch, batch_size], ...]; from each
    listed epoch on, that global batch size (before the first: batch_size)."""

    @model_validator(mode="after")
    def _check_schedule(self) -> TrainConfig:
        epochs = [e for e, _ in self.batch_schedule or ()]
        if epochs != sorted(set(epochs)):
            raise ValueError("batch_schedule: epochs must be strictly increasing")
        return self


class ScalingConfig(Section):
    num_workers: PositiveInt = 1
    use_gpu: bool = False
    cpus_per_worker: PositiveFloat = 1.0
    storage_path: str | None = None
    """Where Ray keeps checkpoints (default: OUT/<name>/ray); s3:// or gs:// on clusters."""
    max_failures: int = Field(default=0, ge=-1)


class WandbConfig(Section):
    project: str = "agd-ray"
    entity: str | None = None
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    """auto: online when an API key or login exists, else offline."""
    log_every: PositiveInt = 50
    """Steps between logs of the training loss, eta and G."""


class SweepConfig(Section):
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [0])
    baselines: list[dict[str, Any]] = Field(default_factory=list)
    max_concurrent_trials: PositiveInt | None = None
    report: bool = True
    """Run ``agd-ray report`` on the results when the sweep ends."""


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
        if self.model.arch != "fcn" and self.data.name == "mnist1d":
            raise ValueError(f"model.arch: {self.model.arch} needs image data; mnist1d is 1-D")
        if self.model.arch == "vgg16" and self.data.name == "mnist":
            raise ValueError("model.arch: vgg16's five max-pools need 32x32 inputs, mnist is 28x28")
        if self.data.name != "mnist1d" and self.data.root is None:
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


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "no such file" if not path.exists() else "not a file")
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(str(path), f"cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "cannot read: not a UTF-8 text file") from None
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
    node: Any = cfg
    for part in split_key(key):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
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
