"""DDPG's losses and small updates, as AMC's ``DDPG.update_policy`` computes them
(``mit-han-lab/amc`` ``lib/agent.py``), with P-DQN's sum over techniques in the actor's loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float


def moving_average(
    baseline: Float[Array, ""], started: Bool[Array, ""], batch_mean: Float[Array, ""], alpha: float
) -> Float[Array, ""]:
    """AMC's reward baseline: the first update takes the batch mean, later ones move towards it,
    ``b <- b + alpha (mean(r) - b)`` (alpha weights the new batch; AMC's 0.5 averages equally)."""
    return jnp.where(started, baseline + alpha * (batch_mean - baseline), batch_mean)


def td_target(
    reward: Float[Array, "*n"],
    done: Bool[Array, "*n"],
    next_value: Float[Array, "*n"],
    discount: float,
) -> Float[Array, "*n"]:
    """``y = r + discount (1 - done) Q'(s', mu'(s'))`` (AMC's ``terminal_batch`` is 1 - done)."""
    return reward + discount * (1.0 - done.astype(reward.dtype)) * next_value


def critic_loss(q: Float[Array, " N"], target: Float[Array, " N"]) -> Float[Array, ""]:
    """Mean squared TD error (AMC: ``nn.MSELoss``); the target carries no gradient."""
    return jnp.mean(jnp.square(q - jax.lax.stop_gradient(target)))


def actor_loss(q: Float[Array, "N T"], technique_ok: Bool[Array, "N T"]) -> Float[Array, ""]:
    """P-DQN's actor loss: minus the batch mean of ``sum_t Q(s, t, actor(s)_t)`` over the
    techniques the state allows (AMC's ``-critic(s, actor(s)).mean()`` for one technique)."""
    return -jnp.mean(jnp.sum(jnp.where(technique_ok, q, 0.0), axis=-1))


def best_technique(q: Float[Array, "N T"], technique_ok: Bool[Array, "N T"]):
    """(argmax, max) of Q over the allowed techniques."""
    masked = jnp.where(technique_ok, q, -jnp.inf)
    return jnp.argmax(masked, axis=-1).astype(jnp.int32), jnp.max(masked, axis=-1)


def soft_update(target, online, tau: float):
    """``target <- (1 - tau) target + tau online`` on every leaf (AMC's ``soft_update``)."""
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)
