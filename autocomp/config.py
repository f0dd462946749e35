"""Typed config schemas, registered with Hydra's ConfigStore so a typo fails at compose time.

Library code takes these dataclasses; only entry points touch ``DictConfig``. Cross-field checks
live in ``__post_init__`` so they run both for YAML-composed configs (``OmegaConf.to_object``)
and for configs built in Python (tests).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

LAYER_KINDS = (
    "conv", "dense", "dwconv", "maxpool", "avgpool", "gap", "flatten", "relu", "save", "add"
)  # fmt: skip
ACTIVATIONS = ("relu", "none")
NORMS = ("none", "batch")
OPTIMIZERS = ("adamw", "sgd")
DATA_SOURCES = ("digits", "local", "tfds")  # the keys of autocomp.data.SOURCES


class ConfigError(ValueError):
    """A config value that composes but makes no sense; the message names the key and the fix."""


@dataclass
class LayerConfig:
    """One layer of a sequential model.

    Attributes:
        kind: one of ``conv``, ``dense``, ``dwconv`` (depthwise conv, as many outputs as
            inputs), ``maxpool``, ``avgpool``, ``gap`` (global average pool), ``flatten``,
            ``relu``, ``save`` and ``add`` (a residual shortcut: ``add`` adds the tensor of the
            matching ``save``, subsampled and zero-padded where the shapes differ).
        name: unique layer name (becomes the params pytree key); required for conv/dense/dwconv.
        features: output channels (conv) or units (dense).
        kernel: square kernel size (conv) or pooling window (pools).
        stride: stride of conv or pool (pools default to their window).
        activation: ``relu`` or ``none`` applied after a conv/dense/dwconv.
        norm: ``batch`` adds batch norm after the layer while the base model trains; it is
            folded into the layer's kernel and bias afterwards (what TFLite runs).
    """

    kind: str = MISSING
    name: str | None = None
    features: int = 0
    kernel: int = 1
    stride: int = 1
    activation: str = "relu"
    norm: str = "none"

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise ConfigError(f"model.layers: unknown kind {self.kind!r}; use one of {LAYER_KINDS}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"model.layers[{self.name}]: activation {self.activation!r} not in {ACTIVATIONS}"
            )
        if self.norm not in NORMS:
            raise ConfigError(f"model.layers[{self.name}]: norm {self.norm!r} not in {NORMS}")
        if self.kind in ("conv", "dense", "dwconv"):
            if not self.name:
                raise ConfigError(f"model.layers: every {self.kind} layer needs a name")
            if self.kind != "dwconv" and self.features <= 0:
                raise ConfigError(f"model.layers[{self.name}]: features must be > 0")
        if self.kernel <= 0 or self.stride <= 0:
            raise ConfigError(f"model.layers[{self.name or self.kind}]: kernel/stride must be > 0")


@dataclass
class ModelConfig:
    """A built-in sequential CNN (``layers``), or a user's own linen model (``_target_``).

    ``input_shape`` is (H, W, C) and ``num_classes`` the last layer's width.

    A user's model: ``_target_`` is the import path of its ``nn.Module`` class (or of a
    function returning one), called with ``kwargs``; ``checkpoint`` an orbax checkpoint of its
    variables (empty: autocomp trains it first, with ``base``); ``apply_kwargs`` the keyword
    arguments of ``apply`` at inference (``{train: false}``), ``train_kwargs`` those of
    training; ``output`` the attribute or key of the model's output that holds the logits
    (empty: the output is the logits).
    """

    name: str = MISSING
    input_shape: list[int] = field(default_factory=lambda: [8, 8, 1])
    num_classes: int = 10
    layers: list[LayerConfig] = field(default_factory=list)
    _target_: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str = ""
    apply_kwargs: dict[str, Any] = field(default_factory=dict)
    train_kwargs: dict[str, Any] = field(default_factory=dict)
    output: str = ""

    def __post_init__(self) -> None:
        if self._target_:
            return
        names = [layer.name for layer in self.layers if layer.name]
        if len(names) != len(set(names)):
            raise ConfigError(f"model.layers: layer names must be unique, got {names}")
        weighted = [layer for layer in self.layers if layer.kind in ("conv", "dense")]
        if not weighted or weighted[-1].kind != "dense":
            raise ConfigError("model.layers: the last weighted layer must be a dense classifier")
        if weighted[-1].features != self.num_classes:
            raise ConfigError(
                f"model.layers: last dense has {weighted[-1].features} units but "
                f"model.num_classes={self.num_classes}"
            )


@dataclass
class DataConfig:
    """Where the data comes from and how it is split.

    Attributes:
        source: ``digits`` (scikit-learn's bundled 8x8 digits, no network needed), ``local``
            (``.npz`` files on disk, see ``autocomp/data/local.py``) or ``tfds``
            (tensorflow-datasets, see ``autocomp/data/tfds.py``).
        name: the data set's name (for a folder of split files, their prefix; for tfds, the
            TFDS name such as ``mnist``, ``cifar10``, ``imagenet2012``).
        path: file or folder for file-based sources.
        val_fraction: share of the non-test data held out for validation (the search's metric).
        test_fraction: share of all data held out for the final test (digits only).
        split_seed: seed of the fixed train/val/test split (independent of the run seed).
        data_dir: tfds: where prepared data sets live (None: TFDS's default).
        download: tfds: allow TFDS to download and prepare a missing data set (needs network).
        train_split: tfds: the split to train (and carve validation) from.
        test_split: tfds: the split to test on (``validation`` for imagenet2012).
        image_size: tfds: resize images to (H, W) (needed where sizes vary, as in ImageNet).
        max_examples: cap on examples per split, for quick trials (None: all).
    """

    source: str = "digits"
    name: str = "digits"
    path: str | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    split_seed: int = 0
    data_dir: str | None = None
    download: bool = False
    train_split: str = "train"
    test_split: str = "test"
    image_size: list[int] | None = None
    max_examples: int | None = None

    def __post_init__(self) -> None:
        if self.source not in DATA_SOURCES:
            choices = f"{', '.join(DATA_SOURCES[:-1])} or {DATA_SOURCES[-1]}"
            raise ConfigError(f"data.source={self.source!r}: use {choices}")
        if self.max_examples is not None and self.max_examples <= 0:
            raise ConfigError(f"data.max_examples={self.max_examples} must be > 0 (or null)")
        if self.image_size is not None and len(self.image_size) != 2:
            raise ConfigError(f"data.image_size={self.image_size} must be [height, width]")
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            if not 0.0 < value < 0.5:
                raise ConfigError(f"data.{key}={value} must be in (0, 0.5)")


@dataclass
class TrainConfig:
    """Training of the base model, cached under ``cache_dir`` by (model, data, seed, this).

    ``optimizer``: ``adamw``, or ``sgd`` (Nesterov momentum 0.9, decoupled weight decay); both
    with a linear warm-up and cosine decay. ``augment``: random flips and 4-pixel shifted crops
    (the standard CIFAR augmentation), done inside the compiled step. ``cache_dir`` None means
    ``$AUTOCOMP_CACHE`` or ``~/.cache/autocomp``. Training checkpoints every epoch next to the
    cache entry and resumes from there when interrupted.
    """

    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    augment: bool = False
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size <= 0 or self.learning_rate <= 0:
            raise ConfigError("base: epochs >= 0, batch_size > 0 and learning_rate > 0 required")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"base.optimizer={self.optimizer!r}: use one of {OPTIMIZERS}")


@dataclass
class FinetuneConfig:
    """Knowledge-distillation fine-tuning of the materialized model (Hinton et al., 2015)."""

    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    temperature: float = 4.0
    alpha: float = 0.5  # weight of the hard-label loss; 1 - alpha goes to the teacher
    augment: bool = False
    # re-ranking: the best `rerank` in-budget plans of the search (by reward) each get one pass
    # of distillation over `rerank_examples` training images, and the one with the best
    # validation accuracy after it is chosen (0: the best reward is chosen)
    rerank: int = 0
    rerank_examples: int = 4096

    def __post_init__(self) -> None:
        if self.rerank < 0 or self.rerank_examples < 1:
            raise ConfigError(
                f"finetune.rerank={self.rerank} must be >= 0 (0: off) and "
                f"finetune.rerank_examples={self.rerank_examples} >= 1"
            )
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"finetune.alpha={self.alpha} must be in [0, 1]")
        if self.temperature <= 0:
            raise ConfigError(f"finetune.temperature={self.temperature} must be > 0")


@dataclass
class DistillConfig:
    """Layer-wise distillation of replacement layers that have no closed form from the
    original weights (depthwise-separable, fire, mlpconv): each replacement, one per ratio bin,
    learns to reproduce the original layer's outputs on its inputs from training images.

    Attributes:
        steps: Adam steps per layer and ratio bin, after the closed-form start.
        batch_size: inputs per step.
        learning_rate: Adam step size (the loss is normalized by the target's variance).
        examples: training images whose layer inputs are used.
        crop: conv inputs are cut into ``crop`` x ``crop`` patches (0: whole maps); a conv is
            local, so patches train it at a fraction of the cost.
    """

    steps: int = 100
    batch_size: int = 16
    learning_rate: float = 3e-3
    examples: int = 512
    crop: int = 8

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size <= 0 or self.examples <= 0 or self.crop < 0:
            raise ConfigError(
                "env.distill: steps >= 0, batch_size > 0, examples > 0 and crop >= 0 required"
            )
        if self.learning_rate <= 0:
            raise ConfigError(f"env.distill.learning_rate={self.learning_rate} must be > 0")


@dataclass
class RaceConfig:
    """Racing of plan evaluation: every plan of a lockstep batch is scored on the first
    ``examples`` validation images, and only the ``keep`` share of the batch with the best
    reward there also on the rest; the others keep the estimate. After the search, the best
    plans and the accuracy-latency front are re-scored on the whole split until the chosen
    plan's score is exact (:func:`autocomp.workflow.pipeline.select_plans`).

    Attributes:
        examples: validation images every plan sees (0: off, every plan sees them all).
        keep: share of each batch (at least one plan) that goes on to the whole split.
    """

    examples: int = 0
    keep: float = 0.25

    def __post_init__(self) -> None:
        if self.examples < 0 or not 0.0 < self.keep <= 1.0:
            raise ConfigError(
                f"env.race: examples >= 0 and keep in (0, 1] required (got examples="
                f"{self.examples}, keep={self.keep}); env.race.examples=0 turns racing off"
            )

    @property
    def spec(self) -> tuple[int, float]:
        """(examples, keep), as :class:`envs.compression.CompressionEnv` takes it."""
        return (self.examples, self.keep)


@dataclass
class EnvConfig:
    """The compression environment.

    Attributes:
        techniques: technique names the agent may choose from, in action-index order (empty:
            every registered technique, in registry order; ``autocomp.techniques.REGISTRY``).
            It must include the technique that leaves a layer as it is (``keep``), checked where
            the techniques are built (``make_techniques``).
        ratios: compression ratio bins (fraction removed), each in [0, 1); the first must be 0.
        val_examples: cap on validation examples scored per plan (None: all).
        distill: layer-wise distillation of replacement layers.
        race: racing of plan evaluation (off by default).
        stat_correction: score a plan with each compressed layer's output mapped per channel
            to the original layer's mean and standard deviation (fitted on 256 training
            images; EagleEye's adaptive batch-norm idea); a score only, the delivered model is
            the uncorrected plan. Off by default: docs/ranking.md measures it.
    """

    techniques: list[str] = field(default_factory=list)
    ratios: list[float] = field(
        default_factory=lambda: [0.0, 0.25, 0.5, 0.625, 0.75, 0.875, 0.9375]
    )
    val_examples: int | None = None
    distill: DistillConfig = field(default_factory=DistillConfig)
    race: RaceConfig = field(default_factory=RaceConfig)
    stat_correction: bool = False

    def __post_init__(self) -> None:
        for i, ratio in enumerate(self.ratios):
            if not 0.0 <= ratio < 1.0:
                raise ConfigError(
                    f"env.ratios[{i}]={ratio} is out of range: a ratio is the fraction removed "
                    "and must be in [0, 1), e.g. env.ratios=[0,0.5,0.75]"
                )
        if not self.ratios or self.ratios[0] != 0.0:
            raise ConfigError("env.ratios must start with 0.0 (the uncompressed bin)")
        if list(self.ratios) != sorted(set(self.ratios)):
            raise ConfigError(f"env.ratios={list(self.ratios)} must be strictly increasing")


@dataclass
class RewardConfig:
    """Reward weights and hard budgets.

    reward = accuracy_weight * (acc - base_acc)
             + latency_weight * (1 - lat/base_lat) + energy_weight * (1 - energy/base_energy)
             + size_weight * (1 - bytes/base_bytes) - violation_penalty * [budget violated]

    Budgets are absolute (``max_latency_ms``, ``max_energy_mj``, ``max_bytes``) or relative to the
    base model (``max_*_frac``); where both are set the tighter one holds. ``None`` means none.
    """

    accuracy_weight: float = 1.0
    latency_weight: float = 0.1
    energy_weight: float = 0.05
    size_weight: float = 0.05
    violation_penalty: float = 1.0
    max_latency_ms: float | None = None
    max_energy_mj: float | None = None
    max_bytes: float | None = None
    max_latency_frac: float | None = None
    max_energy_frac: float | None = None
    max_bytes_frac: float | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"reward.{f.name}={value!r} must be a number")
            if f.name.startswith("max_") and value <= 0:
                raise ConfigError(f"reward.{f.name}={value} must be > 0 (or null for no budget)")
            if f.name.endswith("_frac") and value > 1:
                raise ConfigError(f"reward.{f.name}={value} is a fraction of the base: use <= 1")


@dataclass
class DeviceConfig:
    """Target device: a cost profile file (path, or a name shipped in autocomp/devices)."""

    name: str = MISSING
    profile: str = MISSING


@dataclass
class LoggerConfig:
    """Run tracking. ``name``: ``wandb`` or ``none``; wandb runs offline unless ``mode=online``."""

    name: str = "wandb"
    project: str = "autocomp"
    mode: str = "offline"
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.name not in ("wandb", "none"):
            raise ConfigError(f"logger.name={self.name!r}: use logger=wandb or logger=none")
        if self.mode not in ("offline", "online", "disabled"):
            raise ConfigError(f"logger.mode={self.mode!r}: use offline, online or disabled")


@dataclass
class SurveyConfig:
    """``python -m autocomp.bench survey``: every technique alone, applied uniformly.

    Attributes:
        techniques: techniques to compare (None: every one of ``env.techniques`` but keep).
        ratios: ratios per technique; each must be a bin of ``env.ratios``.
        finetune_epochs: distillation fine-tuning of each compressed model.
        finetune_examples: cap on training images used to fine-tune (None: all).
        measure: time the float32 TFLite file of each row in the LiteRT interpreter.
        out_dir: where ``<experiment>.csv``, ``.md`` and ``.png`` are written.
    """

    techniques: list[str] | None = None
    ratios: list[float] = field(default_factory=lambda: [0.5, 0.75, 0.875])
    finetune_epochs: int = 2
    finetune_examples: int | None = None
    measure: bool = True
    out_dir: str = "docs/survey"

    def __post_init__(self) -> None:
        if self.finetune_epochs < 0:
            raise ConfigError(f"survey.finetune_epochs={self.finetune_epochs} must be >= 0")
        if not self.ratios or any(not 0.0 <= r < 1.0 for r in self.ratios):
            raise ConfigError(f"survey.ratios={self.ratios}: give ratios in [0, 1)")


@dataclass
class SweepConfig:
    """Several rewards searched at once, as one compiled (vmapped) search.

    Each non-empty list replaces the ``reward.`` field of its name; a run searches every
    combination (the product of the lists) in one program, then selects, fine-tunes and writes a
    model per combination (``<run dir>/sweep/<name=value,...>/``) and the accuracy-latency front
    over them. All empty (the default): one search, for ``reward``.

    Attributes:
        max_latency_frac: latency budgets, as fractions of the base model's latency.
        latency_weight: weights of the latency saving in the reward.
    """

    max_latency_frac: list[float] = field(default_factory=list)
    latency_weight: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("max_latency_frac", "latency_weight"):
            values = list(getattr(self, name))
            if len(set(values)) != len(values):
                raise ConfigError(f"sweep.{name}={values} repeats a value; list each value once")

    def variants(self, reward: RewardConfig) -> list[tuple[str, RewardConfig]]:
        """(label, reward config) per combination, in product order; ``[]`` when all empty."""
        names = [n for n in ("max_latency_frac", "latency_weight") if getattr(self, n)]
        if not names:
            return []
        out = []
        for combo in itertools.product(*(getattr(self, n) for n in names)):
            changes = dict(zip(names, map(float, combo), strict=True))
            label = ",".join(f"{n}={v:g}" for n, v in changes.items())
            out.append((label, dataclasses.replace(reward, **changes)))
        return out


@dataclass
class RootConfig:
    """The whole run. Groups are directories of ``experiments/``."""

    name: str = "digits"
    seed: int = 0
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    base: TrainConfig = field(default_factory=TrainConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: Any = MISSING
    reward: RewardConfig = field(default_factory=RewardConfig)
    device: DeviceConfig = MISSING
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    resume: bool = True
    export: bool = False
    survey: SurveyConfig = field(default_factory=SurveyConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


def register_configs(agent_schemas: dict[str, type]) -> None:
    """Register the schemas with Hydra's ConfigStore (idempotent).

    Args:
        agent_schemas: agent name -> its config dataclass; stored as ``agent/<name>_schema``.
    """
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="root_schema", node=RootConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="reward", name="reward_schema", node=RewardConfig)
    cs.store(group="device", name="device_schema", node=DeviceConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    for name, schema in agent_schemas.items():
        cs.store(group="agent", name=f"{name}_schema", node=schema)
