"""Uniform compression: its policy is the best uniform plan (brute force in numpy), the grid is
covered once in order, chunk metrics have the protocol's shapes (resuming and the config
file: tests/test_agents.py, for every agent)."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import numpy as np
import pytest
from agent_runs import run_chunks

from agents.uniform import UniformConfig, identity_action, make_trainer
from autocomp.search.agent import EPISODE_KEYS
from autocomp.techniques import make_techniques
from envs.toy import ToyEnv


def _uniform_plans(allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every uniform plan by hand, as the toy env applies it: (t, r) where t fits the layer,
    (0, 0) elsewhere, and a masked action projected to (0, 0). Returns (plans, grid pairs)."""
    n_l, n_t, n_r = allowed.shape
    plans, pairs = [], []
    for t in range(n_t):
        for r in range(n_r):
            plan = np.zeros((n_l, 2), int)
            for layer in range(n_l):
                if allowed[layer, t].any() and allowed[layer, t, r]:
                    plan[layer] = (t, r)
            plans.append(plan)
            pairs.append((t, r))
    return np.array(plans), np.array(pairs)


def test_policy_is_the_best_uniform_plan():
    """The default ToyEnv (4 layers, 3 techniques, 4 ratios): 12 grid pairs. Its optimum mixes
    actions across layers, so the honest target is the best of the 12 uniform plans."""
    env = ToyEnv(num_layers=4, num_techniques=3, num_ratios=4)
    params = env.make_params(seed=0)
    allowed, payoff = np.asarray(params.allowed), np.asarray(params.payoff)
    plans, _ = _uniform_plans(allowed)
    rewards = payoff[np.arange(4), plans[..., 0], plans[..., 1]].sum(-1)
    best = plans[np.argmax(rewards)]
    trainer = make_trainer(UniformConfig(episodes=2048, batch_episodes=5), env)
    assert (trainer.num_chunks, trainer.episodes_per_chunk, trainer.episodes) == (3, 5, 15)
    state, chunks = run_chunks(trainer, params, trainer.init(jax.random.key(0)), trainer.num_chunks)
    np.testing.assert_array_equal(trainer.policy(state, params), best)
    assert not np.array_equal(best, env.optimum(params))  # the toy optimum is not uniform
    for metrics in chunks:
        assert set(EPISODE_KEYS) <= set(metrics)
        assert metrics["plan"].shape == (1, 5, 4, 2)
        for k in EPISODE_KEYS[1:]:
            assert metrics[k].shape == (1, 5), k
    # Grid order, then the last batch padded with the first grid plans again.
    seen = np.concatenate([m["plan"][0] for m in chunks])
    np.testing.assert_array_equal(seen, plans[np.arange(15) % 12])
    np.testing.assert_allclose(
        np.concatenate([m["reward"][0] for m in chunks]), rewards[np.arange(15) % 12], rtol=1e-6
    )


def test_num_chunks_covers_the_grid_or_the_episodes():
    env = ToyEnv(num_layers=4, num_techniques=3, num_ratios=4)  # 12 grid pairs
    for episodes, batch, chunks in [(2048, 32, 1), (2048, 4, 3), (6, 4, 2), (12, 12, 1)]:
        trainer = make_trainer(UniformConfig(episodes=episodes, batch_episodes=batch), env)
        assert (trainer.num_chunks, trainer.episodes_per_chunk) == (chunks, batch)


def test_identity_action():
    env = ToyEnv(num_layers=3, num_techniques=2, num_ratios=3)
    allowed = env.make_params(seed=0).allowed
    np.testing.assert_array_equal(identity_action(env, allowed), np.zeros((3, 2)))

    named = SimpleNamespace(techniques=make_techniques(("svd", "keep")))  # as CompressionEnv
    mask = np.zeros((3, 2, 3), bool)
    mask[:, 1, 0] = True  # the identity only at bin 0, as autocomp.search.space builds it
    mask[:, 0, 1:] = True
    np.testing.assert_array_equal(identity_action(named, mask), [[1, 0]] * 3)


def test_config_checks():
    with pytest.raises(ValueError, match="agent.batch_episodes"):
        UniformConfig(batch_episodes=0)
