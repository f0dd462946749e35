"""Every config file composes; bad input gets a clear error before anything is written."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hydra import compose, initialize
from hydra.errors import ConfigCompositionException, MissingConfigException
from tiny_runs import TINY

from autocomp.config import ConfigError
from autocomp.devices.tables import CostTableError
from autocomp.run import register, to_config

ROOT = Path(__file__).resolve().parents[1]
# The smoke runs of the data-set experiments (about 1 min for MNIST, 2-3 min for the others on
# 2 CPU cores) run with `make test-slow`; digits, the default, runs end to end through the CLI
# in tests/test_pipeline.py.
BIG = {"audio", "cifar", "cifar_resnet20", "imagenet", "mnist"}
# `custom` needs the user's model (model._target_): tests/test_own_models.py runs it with one.
NAMES = [
    p.stem
    for p in sorted((ROOT / "experiments" / "experiment").glob("*.yaml"))
    if p.stem != "custom"
]
EXPERIMENTS = [
    pytest.param(name, marks=pytest.mark.slow) if name in BIG else name
    for name in NAMES
    if name != "digits"
]
BIG_MODEL_TECHNIQUES = ["env.techniques=[keep,magnitude,filter,svd,dwsep,group]"]


def _compose(overrides):
    register()
    with initialize(version_base="1.3", config_path="../experiments"):
        return compose("config", overrides=overrides, return_hydra_config=False)


@pytest.mark.parametrize("name", NAMES)
def test_every_experiment_composes_and_says_its_command(name):
    header = (ROOT / "experiments" / "experiment" / f"{name}.yaml").read_text()
    assert header.startswith("# @package _global_") and "# Command:" in header
    config = to_config(_compose([f"experiment={name}", "logger=none"]))
    assert config.env.ratios[0] == 0.0 and config.model.layers


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_runs_a_few_steps(name, tmp_path, cache_dir):
    from omegaconf import OmegaConf

    from autocomp.run import run

    # The big models run a few steps with a subset of the techniques (every technique runs on
    # the small ones here, and on its own in test_techniques): compiling 12 branches per layer
    # of VGG and MobileNet costs minutes.
    big_model = name in ("cifar", "cifar_resnet20", "imagenet")
    tiny = [*TINY, *(BIG_MODEL_TECHNIQUES if big_model else [])]
    cfg = _compose([f"experiment={name}", f"base.cache_dir={cache_dir}", *tiny])
    if cfg.data.source == "local" and not Path(cfg.data.path).exists():
        pytest.skip(f"data for experiment={name} not found at {cfg.data.path}")
    with contextlib.ExitStack() as stack:
        if cfg.data.source == "tfds":  # users' data sets are not here: TFDS's mock data
            import tensorflow_datasets as tfds

            stack.enter_context(tfds.testing.mock_data(num_examples=64))
            cfg = _compose([f"experiment={name}", f"base.cache_dir={cache_dir}", *tiny,
                            "data.image_size=[32,32]"])  # fmt: skip
        metrics = run(
            to_config(cfg), tmp_path, OmegaConf.to_container(cfg, resolve=True), show_progress=False
        )
    assert (tmp_path / "metrics.json").is_file() and metrics["search"]["episodes"] > 0


def test_unknown_experiment_lists_the_available_ones():
    with pytest.raises(MissingConfigException) as err:
        _compose(["experiment=bogus"])
    assert "experiment/bogus" in str(err.value) and "digits" in str(err.value)


@pytest.mark.parametrize("ratios", ["[0,-0.5]", "[0,0.5,1.0]", "[0,1.5]"])
def test_out_of_range_ratio_is_a_clear_error(ratios):
    cfg = _compose([f"env.ratios={ratios}"])
    with pytest.raises(Exception) as err:
        to_config(cfg)
    assert "env.ratios" in str(err.value) and "[0, 1)" in str(err.value)


def test_reward_weight_of_wrong_type_fails_at_compose():
    with pytest.raises(ConfigCompositionException) as err:
        _compose(["reward.latency_weight=fast"])
    assert "reward.latency_weight" in str(err.value.__cause__) + str(err.value)


def test_unknown_key_fails_at_compose():
    with pytest.raises(ConfigCompositionException):
        _compose(["reward.latency_wieght=0.1"])


def test_missing_cost_table_fails_before_anything_is_written(tmp_path, tiny_config):
    from autocomp.config import DeviceConfig
    from autocomp.run import run

    config = tiny_config(device=DeviceConfig("nope", str(tmp_path / "missing.json")))
    with pytest.raises(CostTableError, match="not found.*analytic_cortex_a76"):
        run(config, tmp_path / "run", {}, show_progress=False)
    assert not (tmp_path / "run").exists()


def test_config_errors_name_the_key():
    from autocomp.config import EnvConfig, RewardConfig

    with pytest.raises(ConfigError, match="reward.max_latency_frac"):
        RewardConfig(max_latency_frac=2.0)
    with pytest.raises(ConfigError, match="reward.latency_weight"):
        RewardConfig(latency_weight="fast")
    from autocomp.techniques import REGISTRY, TechniqueError, make_techniques

    EnvConfig(techniques=["svd"])  # composes; the techniques are checked where they are built
    with pytest.raises(TechniqueError, match="env.techniques.*'keep'"):
        make_techniques(EnvConfig(techniques=["svd"]).techniques)
    # the default lists no names: every registered technique, in registry order
    assert [t.name for t in make_techniques(EnvConfig().techniques)] == list(REGISTRY)


@pytest.mark.parametrize(
    "override,expected",
    [
        ("env.ratios=[0,1.5]", "env.ratios[1]=1.5 is out of range"),
        ("device.profile=/nonexistent/table.json", "device cost table"),
    ],
)
def test_cli_bad_input_is_one_clear_line(tmp_path, override, expected):
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "autocomp.train",
            override,
            "logger=none",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and expected in out and "Traceback" not in out
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "plan.json").exists()
