"""Every registered agent keeps the protocol: its chunk's metrics, its Hydra config, and a
search that is killed and resumed through the loop's generic checkpoint ends where an
uninterrupted one ends (the loop knows nothing of the agent's state)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from agents import AGENTS
from autocomp.search.agent import EPISODE_KEYS
from envs.toy import ToyEnv

NAMES = sorted(AGENTS)
ROOT = Path(__file__).resolve().parents[1]


def _small(name: str):
    """A config of two or more chunks on the toy env."""
    fields = {f.name for f in dataclasses.fields(AGENTS[name].config)}
    changes = {"episodes": 128, "batch_episodes": 8}
    if "population" in fields:
        changes["population"] = 16
    if "tournament" in fields:
        changes["tournament"] = 4
    if "updates_per_chunk" in fields:
        changes["updates_per_chunk"] = 4
    if "steps_per_chunk" in fields:
        changes["steps_per_chunk"] = 4
    if "warmup" in fields:
        changes["warmup"] = 16
    return AGENTS[name].config(**changes)


@pytest.mark.parametrize("name", NAMES)
def test_agent_composes_from_its_config_file_with_the_common_fields(name):
    """Its config file holds every field at the dataclass's default, and composes."""
    from autocomp.run import compose

    saved = yaml.safe_load((ROOT / "experiments" / "agent" / f"{name}.yaml").read_text())
    assert saved.pop("defaults") == [f"{name}_schema"]
    assert saved == dataclasses.asdict(AGENTS[name].config())

    config = compose([f"agent={name}", "agent.episodes=96"]).agent
    assert isinstance(config, AGENTS[name].config)
    assert (config.name, config.episodes) == (name, 96) and config.batch_episodes >= 1


@pytest.mark.parametrize("name", NAMES)
def test_a_killed_search_resumes_through_the_generic_checkpoint(name, tmp_path):
    from autocomp.search.loop import run_search
    from autocomp.workflow.tracking import NullTracker

    env = ToyEnv(num_layers=4, num_techniques=3, num_ratios=4)
    params = env.make_params(seed=1)
    trainer = AGENTS[name].make_trainer(_small(name), env)
    assert trainer.num_chunks >= 2
    state, metrics = trainer.run_chunk(trainer.init(jax.random.key(0)), params)
    n = trainer.episodes_per_chunk
    for key in EPISODE_KEYS:
        assert np.prod(np.shape(metrics[key])[:2]) == n, key
    assert np.shape(metrics["plan"])[2:] == (4, 2)
    assert np.shape(trainer.policy(state, params)) == (4, 2)

    class Killed(Exception):
        pass

    class KillInSecondChunk(NullTracker):
        def log(self, metrics, step=None):
            if step == 2 * n - 1:
                raise Killed

    ckpt = tmp_path / "search.msgpack"
    with pytest.raises(Killed):
        run_search(trainer, params, jax.random.key(3), KillInSecondChunk(), ckpt, "fp", False)
    resumed, history, _ = run_search(
        trainer, params, jax.random.key(3), NullTracker(), ckpt, "fp", False
    )
    fresh, full, _ = run_search(trainer, params, jax.random.key(3), NullTracker(), None, "", False)
    np.testing.assert_array_equal(history["plan"], full["plan"])
    np.testing.assert_allclose(history["reward"], full["reward"])
    np.testing.assert_array_equal(trainer.policy(resumed, params), trainer.policy(fresh, params))


def test_another_agents_checkpoint_is_refused(tmp_path):
    from autocomp.search.loop import load_checkpoint, save_checkpoint
    from autocomp.training.loop import CheckpointError

    env = ToyEnv()
    random_state = AGENTS["random"].make_trainer(_small("random"), env).init(jax.random.key(0))
    save_checkpoint(tmp_path / "search.msgpack", random_state, {"reward": np.zeros(0)}, "fp")
    evolution = AGENTS["evolution"].make_trainer(_small("evolution"), env)
    with pytest.raises(CheckpointError, match="another agent's state"):
        load_checkpoint(tmp_path / "search.msgpack", evolution.init(jax.random.key(0)), "fp")
