"""Rollouts shared by the agents that do not learn a recurrent policy: the actions of each step
come from a function of the step's observation, and the environment applies its budget masks
and projections exactly as in any other search."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from autocomp.search.spaces import EPISODE_KEYS, episode_record


def random_allowed(key: jax.Array, mask: jax.Array) -> jax.Array:
    """int[B, 2]: uniformly random allowed (technique, ratio) actions of masks bool[B, T, R]."""
    batch, _, n_r = mask.shape
    logits = jnp.where(mask, 0.0, -jnp.inf).reshape(batch, -1)
    flat = jax.random.categorical(key, logits)
    return jnp.stack([flat // n_r, flat % n_r], -1).astype(jnp.int32)


def rollout(
    env, env_params, key: jax.Array, batch: int, act: Callable[[jax.Array, int, object], jax.Array]
) -> dict[str, jax.Array]:
    """One lockstep batch of episodes; ``act(key, layer, obs) -> int[B, 2]`` picks each step's
    actions (``layer`` a Python int, ``obs`` the batched observation). Returns the episode
    metrics (:data:`~autocomp.search.agent.EPISODE_KEYS`, leading dim [B], ``plan`` the
    applied plan) and ``features`` [L, B, F] / ``mask`` [L, B, T, R] of every step."""
    keys = jax.random.split(key, batch + 1)
    obs, state = env.batch_reset(keys[1:], env_params)
    features, masks = [], []
    reward = info = None
    key = keys[0]
    for layer in range(env.spec.num_steps):
        key, k = jax.random.split(key)
        features.append(obs.features)
        masks.append(obs.action_mask)
        action = act(k, layer, obs)
        obs, state, reward, _, info = env.batch_step(keys[1:], state, action, env_params)
    out = episode_record(state.plan, reward, info)
    return out | {"features": jnp.stack(features), "mask": jnp.stack(masks)}


def evaluate(env, env_params, plans: jax.Array) -> dict[str, jax.Array]:
    """Score fixed plans int[B, L, 2] (projected onto the budget masks, as a search would)."""
    return env.evaluate_plans(plans, env_params)


def episode_metrics(metrics: dict) -> dict[str, jax.Array]:
    """Only the episode keys (drop per-step features and masks before they reach the host)."""
    return {k: metrics[k] for k in EPISODE_KEYS}
