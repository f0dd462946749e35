"""A tiny plan environment with a known best plan, for testing agents (brax's ``fast`` env).

Each step picks (technique, ratio) for one of ``L`` layers; the episode's reward, paid at the
last step, is the sum of a fixed payoff table ``payoff[l, t, r]`` over the chosen actions, so the
optimum is the per-layer argmax over allowed actions. Same API as :class:`CompressionEnv`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from autocomp.search.spaces import EnvSpec, Observation, StepInfo


class ToyParams(NamedTuple):
    payoff: jax.Array  # float32[L, T, R]
    allowed: jax.Array  # bool[L, T, R]


class ToyState(NamedTuple):
    layer: jax.Array
    plan: jax.Array
    total: jax.Array


class ToyEnv:
    def __init__(
        self, num_layers: int = 4, num_techniques: int = 3, num_ratios: int = 4, margin: float = 0.5
    ):
        self.margin = margin
        self.spec = EnvSpec(
            num_layers,
            num_techniques,
            num_ratios,
            num_layers + 1,
            tuple(f"t{i}" for i in range(num_techniques)),
            tuple(np.linspace(0, 0.9, num_ratios).tolist()),
        )

    def make_params(self, seed: int = 0) -> ToyParams:
        rng = np.random.default_rng(seed)
        s = self.spec
        shape = (s.num_steps, s.num_techniques, s.num_ratios)
        allowed = rng.random(shape) > 0.3
        allowed[:, 0, 0] = True  # always one choice
        payoff = rng.normal(size=shape)
        # A clear optimum: the best allowed action of each layer leads by at least `margin`.
        best = np.where(allowed, payoff, -np.inf).reshape(s.num_steps, -1).argmax(axis=1)
        payoff.reshape(s.num_steps, -1)[np.arange(s.num_steps), best] += self.margin
        return ToyParams(jnp.asarray(payoff, jnp.float32), jnp.asarray(allowed))

    def optimum(self, params: ToyParams) -> np.ndarray:
        payoff = np.where(np.asarray(params.allowed), np.asarray(params.payoff), -np.inf)
        flat = payoff.reshape(self.spec.num_steps, -1).argmax(axis=1)
        return np.stack(np.unravel_index(flat, payoff.shape[1:]), axis=1)

    def greedy_tables(self, params: ToyParams) -> tuple[jax.Array, jax.Array]:
        """Tables for a greedy (equal-slope) selection, float32[L, T, R] each: ``sensitivity``
        is ``max(payoff) - payoff`` over the layer's allowed actions, scaled to [0, 1] per layer
        (1 where not allowed); ``cost`` is zero, so lambda = 0 (least sensitivity per layer)
        picks the per-layer argmax of the payoff, i.e. :meth:`optimum`."""
        payoff = jnp.where(params.allowed, params.payoff, jnp.nan)
        top = jnp.nanmax(payoff, axis=(1, 2), keepdims=True)
        spread = top - jnp.nanmin(payoff, axis=(1, 2), keepdims=True)
        gap = (top - params.payoff) / jnp.where(spread > 0, spread, 1.0)
        sensitivity = jnp.where(params.allowed, gap, 1.0)
        return sensitivity, jnp.zeros_like(sensitivity)

    def greedy_fits(self, params: ToyParams, plans: jax.Array) -> jax.Array:
        """No budget: every plan fits."""
        del params
        return jnp.ones(plans.shape[0], bool)

    def _observe(self, state: ToyState, params: ToyParams) -> Observation:
        layer = jnp.minimum(state.layer, self.spec.num_steps - 1)
        features = jnp.concatenate([jax.nn.one_hot(layer, self.spec.num_steps), state.total[None]])
        return Observation(features, params.allowed[layer])

    def reset(self, key, params):
        s = self.spec
        state = ToyState(jnp.int32(0), jnp.zeros((s.num_steps, 2), jnp.int32), jnp.float32(0))
        return self._observe(state, params), state

    def step(self, key, state, action, params):
        allowed = params.allowed[state.layer]
        ok = allowed[action[0], action[1]]
        applied = jnp.where(ok, action, jnp.zeros(2, jnp.int32)).astype(jnp.int32)
        total = state.total + params.payoff[state.layer, applied[0], applied[1]]
        new = ToyState(state.layer + 1, state.plan.at[state.layer].set(applied), total)
        done = new.layer >= self.spec.num_steps
        reward = jnp.where(done, total, 0.0)
        zero = jnp.float32(0)
        info = StepInfo(applied, zero, zero, zero, zero, jnp.bool_(False))
        return self._observe(new, params), new, reward, done, info

    def batch_reset(self, keys, params):
        return jax.vmap(self.reset, in_axes=(0, None))(keys, params)

    def batch_step(self, keys, state, action, params):
        return jax.vmap(self.step, in_axes=(0, 0, 0, None))(keys, state, action, params)

    def evaluate_plans(self, plans, params) -> dict:
        """Score fixed plans int[B, L, 2] (masked actions projected to (0, 0), as in ``step``)."""
        layers = jnp.arange(self.spec.num_steps)
        ok = params.allowed[layers, plans[..., 0], plans[..., 1]]
        applied = jnp.where(ok[..., None], plans, 0).astype(jnp.int32)
        reward = params.payoff[layers, applied[..., 0], applied[..., 1]].sum(-1)
        zero = jnp.zeros_like(reward)
        return {
            "plan": applied,
            "reward": reward,
            "accuracy": zero,
            "latency_ms": zero,
            "energy_mj": zero,
            "bytes": zero,
            "violation": jnp.zeros(reward.shape, bool),
        }
