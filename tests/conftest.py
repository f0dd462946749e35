"""Shared fixtures: a tiny LeNet on digits, trained once per session into a temp cache."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")
# Real data sets live in ../shared/data beside the checkout (CI has it there too); an absolute
# path makes the experiments' default data paths independent of the working directory.
_SHARED = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data"
)
if os.path.isdir(_SHARED):
    os.environ.setdefault("AUTOCOMP_DATA", os.path.abspath(_SHARED))
# Base models and distilled layers that tests train without naming a cache go to a temporary
# one, never to the user's ~/.cache/autocomp.
if "AUTOCOMP_CACHE" not in os.environ:
    os.environ["AUTOCOMP_CACHE"] = tempfile.mkdtemp(prefix="autocomp-test-cache-")
    atexit.register(shutil.rmtree, os.environ["AUTOCOMP_CACHE"], ignore_errors=True)
# One persistent XLA compilation cache for every worker and every CLI subprocess of the test
# session (the CLI run's programs are then loaded, not recompiled, by the determinism test:
# 35 s -> 26 s for that test, `pytest -n 2 --durations=10 tests/test_pipeline.py -k cli`).
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "jax"),
)

# The jaxtyping annotations on the public array boundaries (reward, spaces, environment, the
# agent's networks and losses) are checked at run time in every test, by beartype through
# jaxtyping's import hook; it must be installed before those modules are first imported.
import jaxtyping  # noqa: E402

CHECKED = (
    "autocomp.search.reward",
    "autocomp.search.spaces",
    "envs.compression",
    "agents.compressor_critic.networks",
    "agents.compressor_critic.losses",
    "agents.ddpg.networks",
    "agents.ddpg.losses",
    "agents.greedy.selection",
    "agents.uniform.train",
)
jaxtyping.install_import_hook(CHECKED, "beartype.beartype")

import dataclasses  # noqa: E402

import pytest  # noqa: E402

from agents.compressor_critic import CompressorCriticConfig  # noqa: E402
from autocomp.config import (  # noqa: E402
    DataConfig,
    DeviceConfig,
    DistillConfig,
    EnvConfig,
    FinetuneConfig,
    LayerConfig,
    LoggerConfig,
    ModelConfig,
    RewardConfig,
    RootConfig,
    TrainConfig,
)

TINY_LAYERS = [
    LayerConfig("conv", "conv1", 8, 3),
    LayerConfig("conv", "conv2", 16, 3),
    LayerConfig("maxpool", kernel=2, stride=2),
    LayerConfig("flatten"),
    LayerConfig("dense", "fc1", 32),
    LayerConfig("dense", "fc2", 10, activation="none"),
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def tiny_config_for(cache_dir: str, **changes) -> RootConfig:
    """The tiny LeNet run on the digits (also for tests that run it in a child process)."""
    config = RootConfig(
        name="tiny",
        seed=0,
        model=ModelConfig("tiny_lenet", [8, 8, 1], 10, TINY_LAYERS),
        data=DataConfig(),
        base=TrainConfig(epochs=8, cache_dir=cache_dir),
        agent=CompressorCriticConfig(episodes=64, batch_episodes=16, updates_per_chunk=2),
        reward=RewardConfig(max_latency_frac=0.85),
        device=DeviceConfig("analytic-cortex-a76", "analytic_cortex_a76"),
        finetune=FinetuneConfig(epochs=1),
        logger=LoggerConfig(name="none"),
        env=EnvConfig(distill=DistillConfig(steps=0, examples=256)),
    )
    return dataclasses.replace(config, **changes)


@pytest.fixture(scope="session")
def tiny_config(cache_dir):
    def make(**changes) -> RootConfig:
        return tiny_config_for(cache_dir, **changes)

    return make


@pytest.fixture(scope="session")
def prepared(tiny_config):
    from autocomp.workflow.pipeline import prepare

    return prepare(tiny_config())


# The longest tests first (from `--durations` of the default run), so that the two workers do
# not end with one of them alone on a long test.
LONGEST = (
    "test_default_experiment_meets_its_bars",
    "test_default_experiment_cli_end_to_end",
    "test_same_config_and_seed_give_the_same_plan",
    "test_bench_agents_runs_every_agent_and_a_rerun_continues",
    "test_structured_pruning_materializes_as_simulated",
    "test_experiment_composes_and_runs_a_few_steps",
    "test_compress_a_trained_user_model_end_to_end",
    "test_joint_search_tunes_the_weights_and_materializes_them",
    "test_launch_files_run_a_trial",
    "test_a_budget_sweep_run_writes_a_model_per_budget_and_the_front",
    "test_sweep_runs_offline_and_resumes",
    "test_budget_sweep_on_a_real_search_chooses_what_separate_searches_choose",
    "test_compressor_critic_beats_random_search_on_a_tiny_real_search",
    "test_cli_compresses_a_user_model_from_its_orbax_checkpoint",
    "test_compress_a_trained_nnx_model_end_to_end",
    "test_resnet18_groups_match_a_hand_analysis",
    "test_mobilenet_groups_match_a_hand_analysis",
    "test_every_technique_converts_to_tflite_and_agrees",
)


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.originalname or item.name
        return LONGEST.index(name) if name in LONGEST else len(LONGEST)

    items.sort(key=rank)  # a stable sort: the rest keep their order
