"""The environment's tables for sensitivity-driven agents: the greedy agent's per-layer
sensitivity and cost shares, and an upper-bound budget check of whole plans (the
compressor-critic's greedy start)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

if TYPE_CHECKING:
    from envs.compression import EnvParams


def greedy_tables(params: EnvParams) -> tuple[Float[Array, "L T R"], Float[Array, "L T R"]]:
    """Per-layer tables for a greedy (equal-slope) selection: ``sensitivity`` (the relative
    output error of each action, 1 where it does not fit) and ``cost``, the sum over the
    resources of ``reward.weights`` (all zero: latency alone) times the layer's cost at full
    input width (width bin 0) / the base model's. An approximation: a pruned predecessor
    makes a layer cheaper. 0 where the technique does not fit (masked by ``allowed``)."""
    w = params.reward.weights
    w = jnp.where(jnp.any(w != 0), w, jnp.array([1.0, 0.0, 0.0], jnp.float32))
    share = params.costs[:, :, :, 0, :3] / params.reward.base
    cost = jnp.where(params.allowed, jnp.sum(share * w, axis=-1), 0.0)
    return params.sensitivity, cost


def greedy_fits(params: EnvParams, plans: Int[Array, "B L 2"]) -> Bool[Array, " B"]:
    """Whether each plan meets every budget by an upper-bound estimate of its costs: the cost
    outside the layers plus every layer's at full input width (a pruned predecessor only makes
    a layer cheaper), so a plan it accepts runs unprojected and in budget."""
    layers = jnp.arange(plans.shape[1])[None, :]
    costs = params.costs[layers, plans[..., 0], plans[..., 1], 0, :3]  # [B, L, 3]
    spent = params.fixed[:3] + jnp.sum(costs, axis=1)
    return jnp.all(spent <= params.reward.budgets * (1.0 + 1e-6), axis=-1)
