"""The config's sections: one pydantic model per concern (data, model, optimizer,
train, scaling, wandb, sweep), each checking its own fields. ``agd_ray.config``
composes them into ``ExperimentConfig``, checks what spans sections, reads YAML and
``--set`` overrides, and turns validation errors into ``ConfigError``; import the
sections from there.

Validators raise ``ValueError("field: problem")``; ``agd_ray.config`` reports it as
``section.field: problem``.
"""

from __future__ import annotations

import difflib
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)


class Section(BaseModel):
    """A config section: unknown keys refused, immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __getitem__(self, key: str) -> Any:
        """A field by name (``cfg["model"]["width"]``), as for the mappings
        inside a config (``sweep.grid``): dotted keys walk both alike."""
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)


Dataset = Literal["mnist1d", "mnist", "cifar10", "cifar100", "imagenet", "pysrc", "tokens"]


class DataConfig(Section):
    name: Dataset = "mnist1d"
    """Images: mnist1d (generated), mnist, cifar10, cifar100, imagenet. Text (model.arch
    gpt): pysrc (this Python's stdlib source as bytes) or tokens (shards in root)."""
    num_samples: PositiveInt | None = None
    """mnist1d: samples generated (default 10000; 80/20 train/test). Text: training
    sequences per epoch, drawn afresh (default: every window of the train split)."""
    root: str | None = None
    """mnist/cifar*: torchvision's layout; imagenet: Parquet shards; tokens: nanoGPT's
    train.bin/val.bin[/test.bin] or Parquet shards (``agd-ray data prepare-text``)."""
    eval_sequences: PositiveInt | None = 512
    """Text: val/test windows scored each epoch, evenly spaced (null: all)."""
    download: bool = False
    """Let torchvision download into ``root`` (needs network access)."""
    cache_dir: str | None = None
    """Where generated mnist1d is cached (default ~/.cache/agd-ray)."""
    loader_workers: int = Field(default=2, ge=0)
    """DataLoader worker processes per Train worker for image datasets."""
    image_size: PositiveInt = 224
    """imagenet: side of the training crops and validation centre crops."""
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Share of the training data held out for validation, drawn from ``train.seed``
    (imagenet: of its shards; text corpora have their own, by file). Baselines are
    tuned on it; the test split is what is reported. 0: no validation split."""

    @property
    def is_text(self) -> bool:
        return self.name in ("pysrc", "tokens")

    @model_validator(mode="after")
    def _defaults(self) -> DataConfig:
        if self.name == "mnist1d" and self.num_samples is None:
            object.__setattr__(self, "num_samples", 10_000)
        return self


class ModelConfig(Section):
    arch: Literal["fcn", "vgg16", "resnet18", "resnet50", "gpt"] = "fcn"
    depth: PositiveInt | None = None
    """fcn: weight layers; gpt: blocks (default 4). Fixed by vgg16/resnet*."""
    width: PositiveInt | None = None
    """fcn: hidden units (default 256); conv: base channels (64); gpt: d_model (128)."""
    bias: bool = False
    """Linear/conv biases and BatchNorm/LayerNorm shifts (the paper has none)."""
    heads: PositiveInt | None = None
    context: PositiveInt | None = None
    vocab: PositiveInt | None = None
    """gpt only: attention heads (default width // 64: heads of width 64), tokens per
    sequence (default 128), vocabulary (default: the data's; ids must be below it)."""

    @model_validator(mode="after")
    def _arch_defaults(self) -> ModelConfig:
        fixed_depth = {"vgg16": 16, "resnet18": 18, "resnet50": 50}.get(self.arch)
        if fixed_depth is not None and self.depth not in (None, fixed_depth):
            raise ValueError(f"depth: {self.arch} has depth {fixed_depth}; leave depth unset")
        object.__setattr__(self, "depth", self.depth or fixed_depth or 4)
        default_width = {"fcn": 256, "gpt": 128}.get(self.arch, 64)
        object.__setattr__(self, "width", self.width or default_width)
        if self.arch != "gpt":
            for key in ("heads", "context", "vocab"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: only model.arch gpt has {key} (got {self.arch})")
            return self
        object.__setattr__(self, "heads", self.heads or max(1, self.width // 64))
        object.__setattr__(self, "context", self.context or 128)
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ValueError(
                f"heads: {self.heads} heads do not divide width {self.width} into heads of an "
                "even width (rotary position embeddings turn pairs of features)"
            )
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
    second_order: Literal["taylor", "reverse"] = "taylor"
    """curvature: how <H u, u> is computed: "taylor" (second-order forward mode, in
    the gradient's forward for curvature_onepass) or "reverse" (H u by a second
    backward through the gradient's; for a model with an operation Taylor mode has no
    rule for, which "taylor" also falls back to, with a warning)."""
    lr: PositiveFloat | None = None
    """Learning rate (defaults: adam 1e-3, muon 0.02, prodigy 1.0 (a multiplier of its
    estimate), schedulefree_adamw 2.5e-3; sgd needs one)."""
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
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16: forward and loss under bf16 autocast (weights, grads, steps stay fp32)."""
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
    """Ray Train workers (data parallel); the global batch is split over them."""
    use_gpu: bool = False
    cpus_per_worker: PositiveFloat | None = None
    """CPUs each worker reserves (fractions allowed; each still gets a torch thread).
    Default 1; 0.5 when data stream through Ray Data (imagenet, Parquet tokens), whose
    tasks need whole CPUs that the workers leave free: a run leaving none is refused."""
    gpus_per_worker: PositiveFloat = 1.0
    """GPUs each worker (a one-worker sweep trial: the trial) reserves when use_gpu: a
    fraction shares a GPU (0.25: four on one GPU), or a whole number."""
    driver_resources: dict[str, PositiveFloat] | None = None
    """Custom Ray resources each sweep trial's driver also asks for, e.g. ``{head:
    0.01}`` with ``ray start --resources='{"head": 1}'`` on the head: drivers stay off
    preemptible (spot) nodes. A one-worker trial's driver is its worker."""
    first_batch_timeout_s: PositiveFloat | None = 600.0
    """Ray Data: fail (saying what it waits for) when an epoch's first batch is late."""
    storage_path: str | None = None
    """A folder, s3:// or gs://; ``<storage_path>/<name>`` holds results, config, report,
    W&B runs, checkpoints, outcomes (OUT is a cache)."""
    max_failures: int = Field(default=0, ge=-1)
    """Train restarts a multi-worker trial's lost worker group this many times."""

    STORAGE_SCHEMES: ClassVar[tuple[str, ...]] = ("file", "s3", "gs", "gcs", "hdfs", "abfs")

    STREAMING_CPUS_PER_WORKER: ClassVar[float] = 0.5

    @model_validator(mode="after")
    def _check(self) -> ScalingConfig:
        if self.gpus_per_worker > 1 and not float(self.gpus_per_worker).is_integer():
            raise ValueError(
                f"gpus_per_worker: {self.gpus_per_worker:g}: more than one GPU per worker "
                "must be a whole number (Ray shares GPUs only in fractions of one)"
            )
        scheme = (self.storage_path or "").partition("://")[0]
        if "://" in (self.storage_path or "") and scheme not in self.STORAGE_SCHEMES:
            raise ValueError(
                f"storage_path: {scheme}:// is not a storage pyarrow can write to "
                f"(use a folder or one of {', '.join(s + '://' for s in self.STORAGE_SCHEMES)})"
            )
        for name in self.driver_resources or ():
            if name in ("CPU", "GPU"):
                raise ValueError(
                    f"driver_resources: {name} is not a custom resource (a multi-worker "
                    "trial's driver holds none; a one-worker trial's is its worker's)"
                )
        return self

    def worker_cpus(self, streaming: bool) -> float:
        """CPUs each worker reserves: ``cpus_per_worker``, or its default (1, or
        ``STREAMING_CPUS_PER_WORKER`` when ``streaming`` through Ray Data)."""
        if self.cpus_per_worker is not None:
            return self.cpus_per_worker
        return self.STREAMING_CPUS_PER_WORKER if streaming else 1.0


class WandbConfig(Section):
    project: str = "agd-ray"
    entity: str | None = None
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    """auto: online when an API key or login exists, else offline."""
    log_every: PositiveInt = 50
    """Steps between logs of the training loss, eta and G."""
