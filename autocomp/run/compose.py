"""The run config as the CLI composes it: Hydra's composition of ``experiments/`` with the
agents' schemas registered, checked into a typed :class:`~autocomp.config.RootConfig`."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from agents import AGENTS
from autocomp.config import ConfigError, RootConfig, register_configs
from autocomp.data import DataError
from autocomp.devices.tables import CostTableError
from autocomp.export import ExportError
from autocomp.models.discovery import ModelError
from autocomp.search.plan import PlanError
from autocomp.techniques import TechniqueError
from autocomp.training.loop import CheckpointError

# Bad input of any kind: the entry points print one clear line and exit with 2.
USER_ERRORS = (
    ConfigError, CostTableError, DataError, TechniqueError, PlanError, CheckpointError, ExportError,
    ModelError,
)  # fmt: skip


def register() -> None:
    """Register the config schemas, the agents' among them, with Hydra (idempotent)."""
    register_configs({name: agent.config for name, agent in AGENTS.items()})


def to_config(cfg: DictConfig) -> RootConfig:
    """Typed config from Hydra's (schema checks raise here, before anything is written)."""
    return OmegaConf.to_object(cfg)


def compose(overrides: Sequence[str] = ()) -> RootConfig:
    """The root config of ``experiments/`` with Hydra overrides (no run directory, no logger)."""
    from hydra import compose as hydra_compose
    from hydra import initialize

    register()
    with initialize(version_base="1.3", config_path="../../experiments"):
        return to_config(hydra_compose("config", overrides=["logger=none", *overrides]))
