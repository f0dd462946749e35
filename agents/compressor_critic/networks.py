"""The compressor: an LSTM over the layer sequence (DeepIoT's global view of the layers), with a
technique head, a per-technique ratio head and the critic's value head."""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


class CompressorCritic(nn.Module):
    """One step: (carry, features) -> (carry, technique logits [T], ratio logits [T, R], value)."""

    num_techniques: int
    num_ratios: int
    hidden: int = 64

    @nn.compact
    def __call__(self, carry, features: Float[Array, "... F"]):
        x = nn.relu(nn.Dense(self.hidden, name="embed")(features))
        carry, h = nn.OptimizedLSTMCell(self.hidden, name="lstm")(carry, x)
        t_logits = nn.Dense(self.num_techniques, name="technique")(h)
        r_logits = nn.Dense(self.num_techniques * self.num_ratios, name="ratio")(h)
        r_logits = r_logits.reshape(*h.shape[:-1], self.num_techniques, self.num_ratios)
        value = nn.Dense(1, name="critic")(h)[..., 0]
        return carry, (t_logits, r_logits, value)

    def initial_carry(self, batch: int):
        zeros = jnp.zeros((batch, self.hidden), jnp.float32)
        return (zeros, zeros)


def masked_logits(logits: Array, mask: Array) -> Array:
    return jnp.where(mask, logits, -1e9)


def split_logits(t_logits, r_logits, mask):
    """Masked technique logits [.., T] and ratio logits [.., T, R] from a joint mask [.., T, R]."""
    return masked_logits(t_logits, jnp.any(mask, axis=-1)), masked_logits(r_logits, mask)


def sample_action(key, t_logits, r_logits, mask):
    """Sample (technique, ratio | technique) for a batch; returns int[B, 2]."""
    t_logits, r_logits = split_logits(t_logits, r_logits, mask)
    k_t, k_r = jax.random.split(key)
    t = jax.random.categorical(k_t, t_logits)
    rows = jnp.take_along_axis(r_logits, t[:, None, None], axis=1)[:, 0]
    r = jax.random.categorical(k_r, rows)
    return jnp.stack([t, r], axis=-1).astype(jnp.int32)


def greedy_action(t_logits, r_logits, mask):
    t_logits, r_logits = split_logits(t_logits, r_logits, mask)
    t = jnp.argmax(t_logits, axis=-1)
    rows = jnp.take_along_axis(r_logits, t[:, None, None], axis=1)[:, 0]
    return jnp.stack([t, jnp.argmax(rows, axis=-1)], axis=-1).astype(jnp.int32)
