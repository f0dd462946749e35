"""A fixed-size replay ring buffer held as arrays in the agent's state (AMC's
``SequentialMemory`` of ``rmsize * n_layers`` transitions, with the next observation stored
explicitly instead of read from the next slot)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Transition(NamedTuple):
    """One layer's decision, or a batch of them (leading dims)."""

    features: jax.Array  # float32[F]
    mask: jax.Array  # bool[T, R]
    technique: jax.Array  # int32[], the applied technique
    ratio: jax.Array  # float32[], the applied ratio bin's value
    reward: jax.Array  # float32[], the episode's final reward (AMC stores it on every step)
    done: jax.Array  # bool[]
    next_features: jax.Array  # float32[F]
    next_mask: jax.Array  # bool[T, R]


class Replay(NamedTuple):
    data: Transition  # leaves with leading dim [capacity]
    size: jax.Array  # int32[], filled slots
    pointer: jax.Array  # int32[], next slot to write


def empty(capacity: int, obs_dim: int, num_techniques: int, num_ratios: int) -> Replay:
    f = jnp.zeros((capacity, obs_dim), jnp.float32)
    m = jnp.zeros((capacity, num_techniques, num_ratios), bool)
    z = jnp.zeros(capacity, jnp.float32)
    data = Transition(f, m, jnp.zeros(capacity, jnp.int32), z, z, jnp.zeros(capacity, bool), f, m)
    return Replay(data, jnp.int32(0), jnp.int32(0))


def push(replay: Replay, batch: Transition) -> Replay:
    """Write a batch of N transitions (N <= capacity) at the pointer, wrapping around and
    overwriting the oldest."""
    capacity = replay.data.reward.shape[0]
    n = batch.reward.shape[0]
    idx = (replay.pointer + jnp.arange(n)) % capacity
    data = jax.tree.map(lambda buf, x: buf.at[idx].set(x), replay.data, batch)
    return Replay(
        data,
        jnp.minimum(replay.size + n, capacity).astype(jnp.int32),
        (replay.pointer + n) % capacity,
    )


def sample(replay: Replay, key: jax.Array, n: int) -> Transition:
    """N transitions drawn uniformly with replacement from the filled slots."""
    idx = jax.random.randint(key, (n,), 0, jnp.maximum(replay.size, 1))
    return jax.tree.map(lambda buf: buf[idx], replay.data)
