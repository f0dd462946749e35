"""Regularized evolution: finds the default toy optimum, selection and mutation by hand, the
population is a ring buffer of the applied plans, chunk metrics have the protocol's shapes
(resuming and the config file: tests/test_agents.py, for every agent)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from agent_runs import run_chunks

from agents.evolution import EvolutionConfig, make_trainer
from agents.evolution.train import mutate, random_plans, tournament_winners
from autocomp.search.agent import EPISODE_KEYS
from envs.toy import ToyEnv


def test_finds_default_toy_optimum():
    """The default ToyEnv (4 layers, 3 techniques, 4 ratios), seed 0, allows 8 * 7 * 11 * 11 =
    6776 plans: 512 random plans would hold its optimum with probability
    1 - (6775/6776)**512 = 0.073. Evolution with the default population (64), tournament (16)
    and batch (32) gets there within those 512 evaluations."""
    env = ToyEnv(num_layers=4, num_techniques=3, num_ratios=4)
    params = env.make_params(seed=0)
    assert int(np.asarray(params.allowed).reshape(4, -1).sum(1).prod()) == 6776
    trainer = make_trainer(EvolutionConfig(episodes=512), env)
    assert (trainer.num_chunks, trainer.episodes_per_chunk) == (4, 128)
    state, chunks = run_chunks(trainer, params, trainer.init(jax.random.key(0)), trainer.num_chunks)
    np.testing.assert_array_equal(trainer.policy(state, params), env.optimum(params))
    assert int(state.evaluated) == 512 and int(state.oldest) == 0
    for metrics in chunks:
        assert set(EPISODE_KEYS) <= set(metrics)
        assert metrics["plan"].shape == (4, 32, 4, 2)
        for k in EPISODE_KEYS[1:]:
            assert metrics[k].shape == (4, 32), k
    # The population is the last 64 evaluations (the ring has turned over whole times).
    plans = np.concatenate([m["plan"].reshape(-1, 4, 2) for m in chunks])
    rewards = np.concatenate([m["reward"].reshape(-1) for m in chunks])
    np.testing.assert_array_equal(state.plans, plans[-64:])
    np.testing.assert_array_equal(state.reward, rewards[-64:])
    # Children of the evolution phase improve on the random population.
    assert rewards[64:].mean() > rewards[:64].mean()
    # Every child differs from some member of the population it was bred from in one layer
    # at most: check the first evolution step against the random population.
    parents = plans[:64]
    for child in plans[64:96]:
        assert (child != parents).any(-1).sum(-1).min() <= 1


def test_tournament_and_mutation_by_hand():
    reward = jnp.array([5.0, 1.0, 3.0, 9.0])
    violation = jnp.array([False, False, False, True])  # the best reward is over budget
    winners = tournament_winners(jax.random.key(0), reward, violation, 64, 4)
    drawn = jax.random.randint(jax.random.key(0), (64, 4), 0, 4)
    for row, w in zip(np.asarray(drawn), np.asarray(winners), strict=True):
        ok = [i for i in row if i != 3]
        assert w == (max(ok, key=lambda i: reward[i]) if ok else 3)
    over = jnp.ones(4, bool)  # nothing in budget: the best reward wins
    winners = tournament_winners(jax.random.key(0), reward, over, 64, 4)
    np.testing.assert_array_equal(
        winners, np.asarray(drawn)[np.arange(64), reward[drawn].argmax(1)]
    )

    allowed = ToyEnv().make_params(seed=0).allowed
    fresh = random_plans(jax.random.key(1), allowed, 256)
    assert np.asarray(allowed)[np.arange(4), fresh[..., 0], fresh[..., 1]].all()
    parents = jnp.zeros((256, 4, 2), jnp.int32)
    children = np.asarray(mutate(jax.random.key(2), parents, fresh))
    changed = (children != 0).any(-1)
    assert changed.sum(-1).max() == 1  # one layer at most ((0, 0) may be drawn again)
    assert set(np.nonzero(changed)[1]) == {0, 1, 2, 3}  # every layer gets mutated


def test_config_checks():
    with pytest.raises(ValueError, match="agent.population"):
        EvolutionConfig(population=48, batch_episodes=32)
    with pytest.raises(ValueError, match="agent.episodes"):
        EvolutionConfig(episodes=32)
    with pytest.raises(ValueError, match="agent.tournament"):
        EvolutionConfig(tournament=65)
    with pytest.raises(ValueError, match="agent.steps_per_chunk"):
        EvolutionConfig(steps_per_chunk=0)
