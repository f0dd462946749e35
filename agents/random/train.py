"""Random search as a :class:`~autocomp.search.agent.Trainer`.

Each step rolls out ``batch_episodes`` episodes in lockstep, every action drawn uniformly from
the step's ``action_mask`` (:func:`autocomp.search.rollouts.random_allowed`), so the budget masks
and projections act exactly as for any other agent. The policy is the best in-budget plan seen
(:class:`~autocomp.search.agent.Best`). Random search is the baseline of Bergstra & Bengio,
"Random Search for Hyper-Parameter Optimization", JMLR 13 (2012).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from agents.random.config import RandomConfig
from autocomp.search import rollouts
from autocomp.search.agent import Best, Trainer, best_plan_policy, num_chunks, scan_chunk
from autocomp.search.spaces import Environment


class RandomState(NamedTuple):
    """``key``: PRNG key of the next step; ``best``: best in-budget plan seen; ``episodes``:
    plans evaluated so far."""

    key: jax.Array
    best: Best
    episodes: jax.Array


def make_trainer(config: RandomConfig, env: Environment) -> Trainer:
    """Random search bound to ``env``: a chunk is ``steps_per_chunk`` lockstep batches of
    ``batch_episodes`` uniformly random allowed episodes, one jitted ``lax.scan``."""
    per_chunk = config.steps_per_chunk * config.batch_episodes

    def init(key: jax.Array) -> RandomState:
        return RandomState(key, Best.empty(env.spec.num_steps), jnp.int32(0))

    def act(key, layer, obs):
        del layer
        return rollouts.random_allowed(key, obs.action_mask)

    def step(env_params, state: RandomState, _):
        key, k_roll = jax.random.split(state.key)
        out = rollouts.rollout(env, env_params, k_roll, config.batch_episodes, act)
        metrics = rollouts.episode_metrics(out)
        new = RandomState(key, state.best.update(metrics), state.episodes + config.batch_episodes)
        return new, metrics

    run_chunk = scan_chunk(step, config.steps_per_chunk)

    return Trainer(
        init, run_chunk, best_plan_policy, num_chunks(config.episodes, per_chunk), per_chunk
    )
