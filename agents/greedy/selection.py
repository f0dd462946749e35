"""The greedy agent's pure pieces: the per-layer equal-slope selection and the lambda sweep."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Int


def select(
    sensitivity: Float[ArrayLike, "L T R"],
    cost: Float[ArrayLike, "L T R"],
    allowed: ArrayLike,
    lam: Float[ArrayLike, ""],
) -> Int[Array, "L 2"]:
    """Each layer's allowed (technique, ratio) minimizing ``sensitivity + lam * cost``.

    Ties go to the cheaper action (at lambda = 0 the least-error actions are often several:
    the identity and any exact technique), then to the lowest (technique, ratio) index.

    Args:
        sensitivity: per-layer error of every action.
        cost: per-layer cost of every action (a share of the base model's).
        allowed: bool[L, T, R] the actions that exist (each layer has at least one).
        lam: the multiplier, >= 0.

    Returns:
        int32[L, 2] the plan.
    """
    sensitivity, cost, allowed = jnp.asarray(sensitivity), jnp.asarray(cost), jnp.asarray(allowed)
    n_l, _, n_r = allowed.shape
    score = jnp.where(allowed, sensitivity + lam * cost, jnp.inf)
    least = jnp.min(score, axis=(1, 2), keepdims=True)
    tied = allowed & (score <= least)
    flat = jnp.argmin(jnp.where(tied, cost, jnp.inf).reshape(n_l, -1), axis=1)
    return jnp.stack([flat // n_r, flat % n_r], axis=1).astype(jnp.int32)


select_many = jax.vmap(select, in_axes=(None, None, None, 0))
"""``select`` for each multiplier of ``lam`` float[N]: int32[N, L, 2] plans."""


def lambda_grid(n: int, lambda_min: float, lambda_max: float) -> np.ndarray:
    """float32[n], ascending: 0, then ``n - 1`` log-spaced multipliers from min to max."""
    rest = np.geomspace(lambda_min, lambda_max, n - 1) if n > 1 else np.zeros(0)
    return np.concatenate([[0.0], rest]).astype(np.float32)


def van_der_corput_order(n: int) -> np.ndarray:
    """int[n], a permutation of range(n), coarse to fine: the bit-reversal order of the next
    power of two, restricted to indices below ``n`` (0, n/2, n/4, 3n/4, ... for n = 2^k), so
    any prefix spreads over the whole grid."""
    bits = max(1, (n - 1).bit_length())
    order = [int(format(i, f"0{bits}b")[::-1], 2) for i in range(1 << bits)]
    return np.array([i for i in order if i < n], np.int64)


def coarse_to_fine(n: int, lambda_min: float, lambda_max: float) -> np.ndarray:
    """float32[n]: :func:`lambda_grid` in :func:`van_der_corput_order` (any prefix spreads
    over the whole grid)."""
    return lambda_grid(n, lambda_min, lambda_max)[van_der_corput_order(n)]
