"""The compressor-critic against random search at equal plan evaluations, over several seeds:
on the toy environment and on a tiny real search (a statistical check that can fail)."""

from __future__ import annotations

import jax
import numpy as np
from scipy.stats import mannwhitneyu

from agents import AGENTS
from envs.toy import ToyEnv


def _best_rewards(name: str, env, params, episodes: int, seeds: int, **overrides) -> np.ndarray:
    """Best in-budget reward of each seed's search of ``episodes`` plans."""
    config = AGENTS[name].config(episodes=episodes, **overrides)
    trainer = AGENTS[name].make_trainer(config, env)
    bests = []
    for seed in range(seeds):
        state, rewards = trainer.init(jax.random.key(seed)), []
        for _ in range(trainer.num_chunks):
            state, metrics = trainer.run_chunk(state, params)
            ok = ~np.asarray(metrics["violation"]).ravel()
            rewards.append(np.where(ok, np.asarray(metrics["reward"]).ravel(), -np.inf))
        bests.append(np.concatenate(rewards)[:episodes].max())
    return np.array(bests)


def _beats(ours: np.ndarray, theirs: np.ndarray) -> None:
    test = mannwhitneyu(ours, theirs, alternative="greater")
    assert ours.mean() > theirs.mean() and test.pvalue < 0.05, (ours, theirs, test.pvalue)


def test_compressor_critic_beats_random_search_on_the_toy_env():
    """6 layers of 12 actions (about 3e6 plans), 2,048 plans per search, 8 seeds: random search
    stays well short of the optimum. Without the greedy start: the toy's sensitivity table
    would hand it the optimum in the first update, and this checks the learning."""
    env = ToyEnv(num_layers=6, num_techniques=3, num_ratios=4)
    params = env.make_params(seed=0)
    _beats(
        _best_rewards("compressor_critic", env, params, 2048, 8, greedy_start=0),
        _best_rewards("random", env, params, 2048, 8),
    )


def test_compressor_critic_beats_random_search_on_a_tiny_real_search(prepared):
    """The tiny LeNet's real search (its latency budget, 85% of the base model, is near the
    tightest its fixed costs allow)."""
    from autocomp.run import build_env

    env, params = build_env(prepared)
    ours = _best_rewards("compressor_critic", env, params, 512, 5)
    theirs = _best_rewards("random", env, params, 512, 5)
    _beats(ours, theirs)
