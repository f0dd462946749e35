"""AMC's actor and critic (``mit-han-lab/amc`` ``lib/agent.py``), with one ratio per technique,
and the action wall that turns the actor's continuous ratios into an allowed action."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int


class Actor(nn.Module):
    """FC-hidden-hidden, sigmoid: features [..., F] -> one ratio in [0, 1] per technique [..., T]
    (AMC's actor has one output, the layer's preserve ratio)."""

    num_techniques: int
    hidden: int = 300

    @nn.compact
    def __call__(self, features: Float[Array, "... F"]) -> Float[Array, "... T"]:
        x = nn.relu(nn.Dense(self.hidden, name="fc1")(features))
        x = nn.relu(nn.Dense(self.hidden, name="fc2")(x))
        return nn.sigmoid(nn.Dense(self.num_techniques, name="fc3")(x))


class Critic(nn.Module):
    """AMC's critic: ``relu(fc_s(state) + fc_a(action))``, FC-hidden, FC-1, where the action is
    (one-hot technique, ratio). Leading dims of the three inputs broadcast, so one call scores
    every technique of a batch (features [B, 1, F], technique [B, T], ratio [B, T])."""

    num_techniques: int
    hidden: int = 300

    @nn.compact
    def __call__(
        self,
        features: Float[Array, "... F"],
        technique: Int[Array, "*n"],
        ratio: Float[Array, "*n"],
    ) -> Float[Array, "*n"]:
        action = jnp.concatenate(
            [jax.nn.one_hot(technique, self.num_techniques), ratio[..., None]], axis=-1
        )
        x = nn.Dense(self.hidden, name="fc_state")(features)
        x = nn.relu(x + nn.Dense(self.hidden, name="fc_action")(action))
        x = nn.relu(nn.Dense(self.hidden, name="fc2")(x))
        return nn.Dense(1, name="fc3")(x)[..., 0]


def action_wall(
    ratio: Float[Array, "*n"], allowed: Bool[Array, "... R"], ratios: Float[Array, " R"]
) -> Int[Array, "*n"]:
    """The ratio bin a continuous ratio becomes under a technique's mask (AMC's action wall,
    with the env's mask as the wall): the ratio is clipped to the range of ratios the mask
    allows, then rounded to the nearest allowed bin (ties to the lower index). For a mask whose
    allowed bins are contiguous this is clip-then-round-to-nearest-bin; a gap in the mask (the
    toy env has them) is skipped rather than sent to the env for projection. A row with no
    allowed bin gives bin 0 (its technique is never chosen)."""
    lo = jnp.min(jnp.where(allowed, ratios, jnp.inf), axis=-1)
    hi = jnp.max(jnp.where(allowed, ratios, -jnp.inf), axis=-1)
    clipped = jnp.clip(ratio, lo, hi)
    distance = jnp.where(allowed, jnp.abs(ratios - clipped[..., None]), jnp.inf)
    return jnp.argmin(distance, axis=-1).astype(jnp.int32)


def explore_ratios(
    key: jax.Array, mean: Float[Array, "B T"], sigma: Float[Array, " B"]
) -> Float[Array, "B T"]:
    """AMC's exploration: a truncated normal on [0, 1] around the actor's ratios, then clipped
    to [0, 1]; sigma 0 gives the actor's ratios unchanged."""
    safe = jnp.maximum(sigma, 1e-6)[:, None]
    z = jax.random.truncated_normal(key, (0.0 - mean) / safe, (1.0 - mean) / safe, mean.shape)
    return jnp.where(sigma[:, None] > 0, jnp.clip(mean + safe * z, 0.0, 1.0), mean)
