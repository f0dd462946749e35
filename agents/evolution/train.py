"""Regularized (aging) evolution as a :class:`~autocomp.search.agent.Trainer`.

The algorithm of Real, Aggarwal, Huang and Le, "Regularized Evolution for Image Classifier
Architecture Search", AAAI 2019 (Algorithm 1; the authors' public notebook is
google-research/google-research ``evolution/regularized_evolution_algorithm``), on plans:

- The population of ``P`` plans starts as the first ``P`` evaluations: random plans, every
  layer's action uniform over the layer's static fit mask ``env_params.allowed``.
- Each later step breeds a batch of ``B`` children. For each: draw ``S`` members uniformly
  (with replacement, as the notebook does), take the best (over-budget members rank below every
  in-budget one, then by reward), copy its plan and set ONE uniformly chosen layer to a
  uniformly random action the layer's static fit mask allows (possibly the same one).
- The children are scored by :func:`autocomp.search.rollouts.evaluate`, so the environment
  projects them onto the budgets as in any search; the APPLIED plans join the population in
  place of the ``B`` oldest members (a ring buffer: ``oldest`` points at the next to die).

All of it runs in jitted ``lax.scan`` steps; the policy is the best in-budget plan seen
(:class:`~autocomp.search.agent.Best`). ``B`` members are replaced at once where the paper
replaces one per cycle: the batch is evaluated in parallel, as the paper's workers do.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from agents.evolution.config import EvolutionConfig
from autocomp.search import rollouts
from autocomp.search.agent import Best, Trainer, best_plan_policy, num_chunks, scan_chunk
from autocomp.search.spaces import Environment


class EvolutionState(NamedTuple):
    """``plans`` int[P, L, 2], ``reward`` float[P], ``violation`` bool[P]: the population (its
    applied plans and their scores); ``oldest``: ring index of the oldest member; ``evaluated``:
    plans evaluated so far (the first ``P`` are the random population); ``best``: the best
    in-budget plan seen; ``key``: PRNG key of the next step."""

    key: jax.Array
    plans: jax.Array
    reward: jax.Array
    violation: jax.Array
    oldest: jax.Array
    evaluated: jax.Array
    best: Best


def random_plans(key: jax.Array, allowed: jax.Array, batch: int) -> jax.Array:
    """int[B, L, 2]: every layer's action uniform over its static fit mask ``allowed[l]``."""
    n_l = allowed.shape[0]
    mask = jnp.broadcast_to(allowed, (batch, *allowed.shape)).reshape(
        batch * n_l, *allowed.shape[1:]
    )
    return rollouts.random_allowed(key, mask).reshape(batch, n_l, 2)


def tournament_winners(
    key: jax.Array, reward: jax.Array, violation: jax.Array, batch: int, size: int
) -> jax.Array:
    """int[B]: population indices of ``batch`` tournaments of ``size`` uniform draws each; the
    winner is the best in-budget draw (by reward), or the best draw where none is in budget."""
    drawn = jax.random.randint(key, (batch, size), 0, reward.shape[0])
    r, ok = reward[drawn], ~violation[drawn]
    in_budget = jnp.argmax(jnp.where(ok, r, -jnp.inf), axis=-1)
    pick = jnp.where(jnp.any(ok, axis=-1), in_budget, jnp.argmax(r, axis=-1))
    return jnp.take_along_axis(drawn, pick[:, None], axis=-1)[:, 0]


def mutate(key: jax.Array, parents: jax.Array, fresh: jax.Array) -> jax.Array:
    """Children int[B, L, 2]: each parent with one uniformly chosen layer's action replaced by
    that layer's action in ``fresh`` (random plans from :func:`random_plans`)."""
    batch, n_l, _ = parents.shape
    layer = jax.random.randint(key, (batch,), 0, n_l)
    rows = jnp.arange(batch)
    return parents.at[rows, layer].set(fresh[rows, layer])


def make_trainer(config: EvolutionConfig, env: Environment) -> Trainer:
    """Regularized evolution bound to ``env``: a chunk is ``steps_per_chunk`` steps of
    ``batch_episodes`` evaluations, one jitted ``lax.scan``."""
    batch, pop, n_l = config.batch_episodes, config.population, env.spec.num_steps
    per_chunk = config.steps_per_chunk * batch

    def init(key: jax.Array) -> EvolutionState:
        return EvolutionState(
            key,
            jnp.zeros((pop, n_l, 2), jnp.int32),
            jnp.full((pop,), -jnp.inf, jnp.float32),
            jnp.ones((pop,), bool),
            jnp.int32(0),
            jnp.int32(0),
            Best.empty(n_l),
        )

    def step(env_params, state: EvolutionState, _):
        key, k_fresh, k_select, k_mutate = jax.random.split(state.key, 4)
        fresh = random_plans(k_fresh, env_params.allowed, batch)
        winners = tournament_winners(
            k_select, state.reward, state.violation, batch, config.tournament
        )
        children = mutate(k_mutate, state.plans[winners], fresh)
        plans = jnp.where(state.evaluated < pop, fresh, children)
        metrics = rollouts.episode_metrics(rollouts.evaluate(env, env_params, plans))
        at = state.oldest
        new = EvolutionState(
            key,
            jax.lax.dynamic_update_slice(
                state.plans, metrics["plan"].astype(jnp.int32), (at, 0, 0)
            ),
            jax.lax.dynamic_update_slice(
                state.reward, metrics["reward"].astype(jnp.float32), (at,)
            ),
            jax.lax.dynamic_update_slice(state.violation, metrics["violation"], (at,)),
            (at + batch) % pop,
            state.evaluated + batch,
            state.best.update(metrics),
        )
        return new, metrics

    run_chunk = scan_chunk(step, config.steps_per_chunk)

    return Trainer(
        init, run_chunk, best_plan_policy, num_chunks(config.episodes, per_chunk), per_chunk
    )
