"""Losses of the compressor-critic, unbatched (vmap them), named as in rlax."""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Int

from agents.compressor_critic.networks import split_logits


def action_log_prob_and_entropy(
    t_logits: Float[Array, " T"], r_logits: Float[Array, "T R"], mask, action: Int[Array, " 2"]
):
    """log pi(t, r) = log pi(t) + log pi(r | t) under the mask, and the entropy
    H(t) + H(r | t) at the taken technique."""
    t_logits, r_logits = split_logits(t_logits, r_logits, mask)
    log_t = jax.nn.log_softmax(t_logits)
    log_r = jax.nn.log_softmax(r_logits[action[0]])
    logp = log_t[action[0]] + log_r[action[1]]
    entropy = -jnp.sum(jnp.exp(log_t) * log_t) - jnp.sum(jnp.exp(log_r) * log_r)
    return logp, entropy


def policy_gradient_loss(
    logp: Float[ArrayLike, ""], advantage: Float[ArrayLike, ""]
) -> Float[ArrayLike, ""]:
    """REINFORCE with a baseline: -log pi(a) * A, with A treated as a constant."""
    return -logp * jax.lax.stop_gradient(advantage)


def value_loss(value: Float[ArrayLike, ""], target: Float[ArrayLike, ""]) -> Float[ArrayLike, ""]:
    """The critic's regression to the return: 0.5 (v - G)^2."""
    return 0.5 * jnp.square(value - jax.lax.stop_gradient(target))


def entropy_loss(entropy: Float[ArrayLike, ""]) -> Float[ArrayLike, ""]:
    """Minimizing -H maximizes the entropy (exploration bonus)."""
    return -entropy


def returns_to_go(rewards: Float[Array, " L"]) -> Float[Array, " L"]:
    """Undiscounted reward-to-go (gamma = 1: one episode is one plan, as in AMC)."""
    return jnp.cumsum(rewards[::-1])[::-1]
