"""The reward: accuracy against latency, energy and size, with weights and hard budgets.

An injected object (jumanji's ``reward.py``): the environment holds :class:`RewardParams` as
arrays in its params pytree, so one compiled function serves any weights and budgets.
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from autocomp.config import RewardConfig

RESOURCES = ("latency_ms", "energy_mj", "bytes")


class RewardParams(NamedTuple):
    """Arrays over ``RESOURCES`` (latency, energy, bytes).

    Attributes:
        accuracy_weight: weight of (acc - base_acc).
        weights: float32[3] weights of the savings 1 - x / base_x.
        base: float32[3] the base model's latency, energy and bytes.
        base_accuracy: the base model's validation accuracy.
        budgets: float32[3] hard budgets (inf: none).
        violation_penalty: subtracted when a budget is exceeded.
    """

    accuracy_weight: Float[Array, ""]
    weights: Float[Array, "3"]
    base: Float[Array, "3"]
    base_accuracy: Float[Array, ""]
    budgets: Float[Array, "3"]
    violation_penalty: Float[Array, ""]


def make_reward_params(
    cfg: RewardConfig, base: tuple[float, float, float], base_accuracy: float
) -> RewardParams:
    """Resolve absolute and relative budgets (the tighter wins) into arrays."""
    budgets = []
    for name, base_value in zip(RESOURCES, base, strict=True):
        short = name.split("_")[0]
        absolute = getattr(cfg, f"max_{name}" if name != "bytes" else "max_bytes")
        frac = getattr(cfg, f"max_{short}_frac")
        candidates = [np.inf]
        if absolute is not None:
            candidates.append(float(absolute))
        if frac is not None:
            candidates.append(float(frac) * base_value)
        budgets.append(min(candidates))
    return RewardParams(
        accuracy_weight=jnp.float32(cfg.accuracy_weight),
        weights=jnp.array([cfg.latency_weight, cfg.energy_weight, cfg.size_weight], jnp.float32),
        base=jnp.array(base, jnp.float32),
        base_accuracy=jnp.float32(base_accuracy),
        budgets=jnp.array(budgets, jnp.float32),
        violation_penalty=jnp.float32(cfg.violation_penalty),
    )


def compute_reward(
    params: RewardParams, accuracy: Float[Array, ""], resources: Float[Array, "3"]
) -> tuple[Float[Array, ""], Array]:
    """Reward of a finished plan and whether it violates a budget."""
    savings = 1.0 - resources / params.base
    violation = jnp.any(resources > params.budgets * (1.0 + 1e-6))
    reward = (
        params.accuracy_weight * (accuracy - params.base_accuracy)
        + jnp.sum(params.weights * savings)
        - params.violation_penalty * violation
    )
    return reward, violation


def budgets_record(budgets) -> dict[str, float | None]:
    """The budgets as ``metrics.json`` records them; ``None``: no budget (JSON has no infinity)."""
    return {
        name: float(b) if np.isfinite(b) else None
        for name, b in zip(RESOURCES, np.asarray(budgets), strict=True)
    }
