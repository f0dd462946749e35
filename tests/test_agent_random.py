"""Random search: finds the optimum of a toy space small enough for it, chunk metrics have the
protocol's shapes (resuming and the config file: tests/test_agents.py, for every agent)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from agent_runs import run_chunks

from agents.random import RandomConfig, make_trainer
from autocomp.search.agent import EPISODE_KEYS
from envs.toy import ToyEnv


def test_finds_toy_optimum():
    """ToyEnv(3 layers, 2 techniques, 3 ratios) has at most 6**3 = 216 plans; seed 0 allows
    3 * 5 * 4 = 60. Each episode is then a uniform draw of one of the 60 plans, so 1024 of
    them miss the optimum with probability (59/60)**1024 = 3.4e-8 (at most (215/216)**1024 =
    0.0086 for any seed of this size)."""
    env = ToyEnv(num_layers=3, num_techniques=2, num_ratios=3)
    params = env.make_params(seed=0)
    assert int(np.asarray(params.allowed).reshape(3, -1).sum(1).prod()) == 60
    config = RandomConfig(episodes=1024, batch_episodes=32, steps_per_chunk=4)
    trainer = make_trainer(config, env)
    assert (trainer.num_chunks, trainer.episodes_per_chunk) == (8, 128)
    state, chunks = run_chunks(trainer, params, trainer.init(jax.random.key(0)), trainer.num_chunks)
    np.testing.assert_array_equal(trainer.policy(state, params), env.optimum(params))
    assert int(state.episodes) == trainer.episodes == 1024
    for metrics in chunks:
        assert set(EPISODE_KEYS) <= set(metrics)
        assert metrics["plan"].shape == (4, 32, 3, 2)
        for k in EPISODE_KEYS[1:]:
            assert metrics[k].shape == (4, 32), k
    plans = np.concatenate([m["plan"].reshape(-1, 3, 2) for m in chunks])
    allowed = np.asarray(params.allowed)
    assert allowed[np.arange(3), plans[..., 0], plans[..., 1]].all()  # only allowed actions
    assert len(np.unique(plans.reshape(len(plans), -1), axis=0)) == 60  # every plan drawn


def test_config_checks():
    with pytest.raises(ValueError, match="agent.batch_episodes"):
        RandomConfig(episodes=8, batch_episodes=16)
    with pytest.raises(ValueError, match="agent.steps_per_chunk"):
        RandomConfig(steps_per_chunk=0)
